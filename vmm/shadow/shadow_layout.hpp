#pragma once
// Where shadow mode (vmm run --paging shadow) puts things in guest-physical
// memory, as abi.h's "Shadow paging" describes to the guest:
//
//   [0, low_end)                 static: reserved first MiB (GDT, boot
//                                information, hv_shadow_info) and the image
//   [frames_begin, frames_end)   the MMU's frame space, never mapped static:
//     [frames_begin, tables_end)   the mirror of the host and shadow tables
//                                  (FrameSpace::Mirror): the guest CPU walks
//                                  it, the VMM never reads it
//     [tables_end, frames_end)     data frames (the region's pages)
//   [shared_base, stacks_base)   static: shootdown slots, unmap counters (begun, finished)
//   [stacks_base, stacks_top)    static: the vCPU stacks (as in identity mode)
//
// RAM above stacks_top (guests larger than 4 GiB) stays unused in shadow mode.
// A pure function of the sizes, so unit tests cover every boundary.
#include <cstdint>

namespace hv {

struct ShadowLayout {
    std::uint64_t low_end = 0;
    std::uint64_t frames_begin = 0, frames_end = 0;
    std::uint64_t tables_end = 0;
    std::uint64_t shared_base = 0;
    std::uint64_t slots = 0;      // hv_shootdown_slot[cpus]
    std::uint64_t unmap_started = 0, unmap_done = 0; // uint64_t[region_size / 4096] each
    std::uint64_t stacks_base = 0, stacks_top = 0;
    std::uint64_t region_size = 0;
    std::uint64_t frames() const { return (frames_end - frames_begin) / 4096; }
    std::uint64_t table_frames() const { return (tables_end - frames_begin) / 4096; }
};

// The most table frames the host and shadow tables can use at once: every
// leaf, directory and pointer table that can cover the region (once in the
// host address space, once in the shadow tables) and the static ranges of
// `static_bytes` in all (the root tables included), with a table of slack
// per level for an unaligned end. The table pool gets this, doubled for
// frames resting in per-CPU caches, but never more than half the frame space.
std::uint64_t shadow_table_bound(std::uint64_t region_size, std::uint64_t static_bytes);

// The smallest frame space shadow mode accepts: room for the host and shadow
// tables of a small region plus some data pages.
inline constexpr std::uint64_t kMinShadowFrames = 256;
// The largest region: 64 GiB of guest-virtual space (the frame space bounds
// how much of it can be present at once).
inline constexpr std::uint64_t kMaxShadowRegion = 64ull << 30;

// `image_end`: the end of the highest loaded segment. Throws VmmError naming
// --mem or --region when the pieces do not fit.
ShadowLayout plan_shadow_layout(std::uint64_t ram_size, std::uint32_t cpus, std::uint64_t image_end,
                                std::uint64_t region_size);

} // namespace hv
