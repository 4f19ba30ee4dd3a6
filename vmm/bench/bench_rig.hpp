#pragma once
// The MMU stack a `vmm bench` experiment measures (mmu::MmuStack): frames
// for `pages` data pages and their tables, a host address space with one
// anonymous region of that size, and optionally a shadow MMU with one
// memslot over it at kGuest.
#include "mmu/soft/mmu_stack.hpp"

#include <cstdint>

namespace hv::bench {

struct BenchRig : mmu::MmuStack {
    static constexpr std::uint64_t kGuest = 0x100000000; // the region in guest-physical space

    // Data frames, one host and one shadow leaf table per 512 pages, slack
    // for the upper levels, and for the per-CPU frame caches
    // (FrameSpace::allocate(cpu)): each faulting vCPU takes whole aligned
    // chunks of kFrameChunk frames, so up to a chunk per vCPU waits unused
    // at the end of a run (pages / 8 covers that for 1024 vCPUs of 1024
    // pages each: 17 chunks for 1024 pages and their 2-4 tables). Without
    // it the last vCPUs would take frames from other vCPUs' caches, whose
    // per-frame lines are then shared (and counted so). The frames cost
    // nothing until touched (FrameSpace maps them MAP_NORESERVE).
    static std::uint64_t frames_for(std::uint64_t pages) { return pages + pages / 8 + 2 * (pages / 512) + 1024; }
    // Frames for `data_pages` pages faulted by `vcpus` vCPUs anywhere in a
    // larger region: each vCPU's frames (its pages and the 2-6 tables it
    // creates) come in chunks of kFrameChunk, so it takes at most its
    // pages + 69 frames from the pool.
    static std::uint64_t frames_for(std::uint64_t data_pages, std::uint32_t vcpus) {
        return data_pages + std::uint64_t{vcpus} * (mmu::kFrameChunk + 8) + 1024;
    }
    BenchRig(std::uint64_t pages, bool page_at_a_time) : BenchRig(pages, page_at_a_time, frames_for(pages)) {}
    // A region of `pages` pages over a frame space of `nframes` frames (the
    // host maps the region lazily: only faulted pages take frames).
    BenchRig(std::uint64_t pages, bool page_at_a_time, std::uint64_t nframes) : MmuStack(nframes, page_at_a_time) {
        map(pages);
    }

    mmu::ShadowMmu& add_shadow(const mmu::ShadowConfig& config, mmu::TlbShootdown* shootdown, std::uint64_t pages) {
        return MmuStack::add_shadow(config, shootdown, kGuest, pages);
    }
};

} // namespace hv::bench
