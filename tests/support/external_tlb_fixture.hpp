#pragma once
// Shared by the ExternalTlb tests (test_mmu_external_tlb*.cpp): the rig (an
// MmuStack with an ExternalTlb subscribed to its host) and the host's frame
// for an address.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>

#include "mmu/base/units.hpp"
#include "mmu/host/host_address_space.hpp"
#include "mmu/secondary/external_tlb.hpp"
#include "mmu/soft/mmu_stack.hpp"

namespace hv::mmu::test::external_tlb {
inline constexpr std::uint64_t kHost = MmuStack::kHost;
inline constexpr std::uint64_t kGuest = 0x10000000;

// `pages` pages mapped from kHost over `nframes` frames, and an ExternalTlb
// of `vcpus` vCPUs with `entries` entries each.
struct Rig : MmuStack {
    ExternalTlb tlb;
    Rig(bool page_at_a_time = false, std::uint32_t vcpus = 4, std::size_t entries = 64, std::size_t pages = 1024,
        std::size_t nframes = 4096)
        : MmuStack(nframes, page_at_a_time), tlb(host, vcpus, entries) {
        map(pages);
    }
};

inline Pfn host_pfn(HostAddressSpace& host, std::uint64_t ha) {
    const auto t = host.lookup(ha);
    REQUIRE(t);
    return t->pfn;
}

} // namespace hv::mmu::test::external_tlb
