#pragma once
// A TlbShootdown test double: records each shootdown's targets and how
// many pages it flushed, and acknowledges at once.
#include "mmu/secondary/shadow_mmu.hpp"

#include <cstddef>
#include <cstdint>
#include <span>
#include <vector>

namespace hv::mmu::test {

struct RecordingShootdown final : TlbShootdown {
    std::vector<std::vector<std::uint32_t>> targets; // per shootdown, the vCPUs in ascending order
    std::vector<std::size_t> sizes;                  // per shootdown, the number of pages
    void shootdown(const VcpuMask& t, std::span<const std::uint64_t> pages) override {
        std::vector<std::uint32_t> v;
        t.for_each([&](std::uint32_t c) { v.push_back(c); });
        targets.push_back(v);
        sizes.push_back(pages.size());
    }
    // The targets of the latest shootdown (none before the first).
    std::vector<std::uint32_t> last() const { return targets.empty() ? std::vector<std::uint32_t>{} : targets.back(); }
};

} // namespace hv::mmu::test
