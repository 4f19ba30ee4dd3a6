#pragma once
// The ShadowMmu tests' rig: an mmu::MmuStack whose shadow MMU is made up
// front and named `mmu`, calling `sd` (a RecordingShootdown) or no
// shootdown target at all. The host mappings are each test's own (map()).
#include "mmu/soft/mmu_stack.hpp"
#include "tests/support/recording_shootdown.hpp"

#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>

namespace hv::mmu::test {

struct ShadowRig : MmuStack {
    RecordingShootdown sd;
    ShadowMmu& mmu;
    // `nframes` frames; memslot 1 puts `pages` pages from kHost at `guest`.
    ShadowRig(std::size_t nframes, const ShadowConfig& config, std::uint64_t guest, std::uint64_t pages,
              bool with_shootdown = true)
        : MmuStack(nframes), mmu(add_shadow(config, with_shootdown ? &sd : nullptr, guest, pages)) {}
    ~ShadowRig() { shadow.reset(); } // the shadow MMU goes before `sd`, which it calls
    ShadowRig(const ShadowRig&) = delete;
    ShadowRig& operator=(const ShadowRig&) = delete;

    // The bytes of the frame the entry for guest address `ga` maps (it must be present).
    std::uint8_t* guest_bytes(std::uint64_t ga) {
        const std::uint64_t e = mmu.entry(ga);
        REQUIRE(e != 0);
        return frames.bytes(X86PteFormat::pfn(e)).data();
    }
};

} // namespace hv::mmu::test
