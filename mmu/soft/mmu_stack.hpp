#pragma once
// One MMU stack as the benches and the MMU's unit tests build it: a frame
// space, a host address space over it (with its notifier chain,
// host.notifiers()) whose anonymous mappings start at kHost, and, once
// add_shadow() made it, a shadow MMU with memslot 1 over them. Members are
// declared in construction order, so the shadow MMU unsubscribes before the
// host address space goes.
//
// Header only, and here rather than beside the benches or the tests:
// vmm/bench uses it (vmm -> mmu) and so do the tests, while vmm never
// includes tests/ and mmu/check is not linked into vmm.
#include "mmu/base/frame_space.hpp"
#include "mmu/host/host_address_space.hpp"
#include "mmu/secondary/shadow_mmu.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>

namespace hv::mmu {

struct MmuStack {
    static constexpr std::uint64_t kHost = 0x7f0000000000; // the mappings' start in the host address space

    // `nframes` frames, tables and data from the one pool; `page_at_a_time`
    // picks the host's notifier shape (see HostAddressSpace).
    explicit MmuStack(std::size_t nframes, bool page_at_a_time = false)
        : frames(nframes), host(frames, page_at_a_time) {}

    // Maps pages [first, first + pages) counted from kHost, anonymous.
    void map(std::uint64_t pages, bool writable = true, std::uint64_t first = 0) {
        host.map_anonymous({kHost + first * kPage, kHost + (first + pages) * kPage}, writable);
    }

    // Makes the shadow MMU (calling `shootdown`, which may be null) with
    // memslot 1 putting `pages` pages from kHost at guest address `guest`.
    ShadowMmu& add_shadow(const ShadowConfig& config, TlbShootdown* shootdown, std::uint64_t guest,
                          std::uint64_t pages) {
        shadow.emplace(host, config, shootdown);
        shadow->add_memslot({1, guest, pages * kPage, kHost, true});
        return *shadow;
    }

    FrameSpace frames;
    HostAddressSpace host;
    std::optional<ShadowMmu> shadow;
};

} // namespace hv::mmu
