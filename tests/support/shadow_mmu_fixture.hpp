#pragma once
// Shared by the ShadowMmu suite (test_mmu_shadow*.cpp): where the region
// lies, the rig (a ShadowRig with `pages` pages mapped from kHost and put at
// kGuest, its shootdowns recorded) and the configuration helper.
#include "mmu/base/units.hpp"
#include "mmu/secondary/shadow_mmu.hpp"
#include "mmu/soft/mmu_stack.hpp"
#include "tests/support/shadow_rig.hpp"

#include <cstddef>
#include <cstdint>

namespace hv::mmu::test::shadow_mmu {
inline constexpr std::uint64_t kHost = MmuStack::kHost; // host addresses
inline constexpr std::uint64_t kGuest = 0x10000000;     // guest addresses

struct Rig : ShadowRig {
    explicit Rig(ShadowConfig config, std::size_t pages = 1024, std::size_t nframes = 4096)
        : ShadowRig(nframes, config, kGuest, pages) {
        map(pages);
    }
};

inline ShadowConfig cfg(LockPolicy l = LockPolicy::Rw, CoherencePolicy c = CoherencePolicy::Seq,
                        std::size_t batch = 512, std::uint32_t vcpus = 4) {
    return {l, c, batch, vcpus};
}

} // namespace hv::mmu::test::shadow_mmu
