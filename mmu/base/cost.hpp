#pragma once
// What an operation cost the CPU that ran it, in counts that do not depend
// on the core count: locks taken, and read-modify-writes on cache lines
// that other CPUs write by design ("shared-line atomics"; a line counts as
// private only while FrameSpace::line_owner says it is). The frame
// allocator, the table walk, the host fault and the PT lock each report
// one; the shadow MMU adds them to the faulting vCPU's counters.
#include <cstdint>

namespace hv::mmu {

struct Cost {
    std::uint32_t locks = 0;
    std::uint32_t shared_atomics = 0;
    Cost& operator+=(const Cost& o) {
        locks += o.locks;
        shared_atomics += o.shared_atomics;
        return *this;
    }
};

} // namespace hv::mmu
