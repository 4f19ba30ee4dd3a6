#pragma once
// The MMU stack a `vmm bench` experiment measures: frames for `pages` data
// pages and their tables, a host address space with one anonymous region of
// that size, and optionally a shadow MMU with one memslot over it. Members
// are declared in construction order, so the MMU unsubscribes before the
// host address space goes.
#include "host_address_space.hpp"
#include "shadow_mmu.hpp"

#include <cstdint>
#include <optional>

namespace hv::bench {

struct BenchRig {
    static constexpr std::uint64_t kPage = 4096;
    static constexpr std::uint64_t kHost = 0x7f0000000000;  // the region in the host address space
    static constexpr std::uint64_t kGuest = 0x100000000;    // and in guest-physical space

    // Data frames, one host and one shadow leaf table per 512 pages, and
    // slack for the upper levels.
    BenchRig(std::uint64_t pages, bool page_at_a_time)
        : frames(pages + 2 * (pages / 512) + 64), host(frames, page_at_a_time) {
        host.map_anonymous({kHost, kHost + pages * kPage}, true);
    }

    mmu::ShadowMmu& add_shadow(const mmu::ShadowConfig& config, mmu::TlbShootdown* shootdown, std::uint64_t pages) {
        shadow.emplace(host, config, shootdown);
        shadow->add_memslot({1, kGuest, pages * kPage, kHost, true});
        return *shadow;
    }

    mmu::FrameSpace frames;
    mmu::HostAddressSpace host;
    std::optional<mmu::ShadowMmu> shadow;
};

} // namespace hv::bench
