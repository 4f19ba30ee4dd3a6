#pragma once
// FrameSpace: the one physical frame space everything in the MMU lives in.
// A contiguous region cut into 4 KiB frames, addressed by frame number (pfn
// N = the bytes at offset N * 4096). Host page tables, secondary tables and
// data frames all come from its allocator, so an entry anywhere can name any
// frame by number and the same numbers mean the same bytes to every table.
//
// In software mode the region is an anonymous mapping we own. In KVM mode it
// is the guest's RAM (pfn = guest-physical address >> 12): tables built here
// are walked by the guest CPU for real. Only [first, end) is handed out then,
// so the guest's static identity region (code, stacks, runtime) is never
// allocated over.
//
// Thread safety: allocate(), free(), counters() and is_allocated() may be
// called from any number of threads. bytes(), entries() and the geometry
// queries touch no shared state.
#include <cstddef>
#include <cstdint>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

namespace hv::mmu {

using Pfn = std::uint64_t;
inline constexpr std::size_t kFrameSize = 4096;
inline constexpr unsigned kFrameShift = 12;
// 64-bit entries in one table frame.
inline constexpr std::size_t kEntriesPerFrame = kFrameSize / sizeof(std::uint64_t);

// Allocator statistics. allocated - freed == in_use always holds in a
// snapshot from counters(): all fields change under one lock.
struct FrameCounters {
    std::uint64_t allocated = 0;  // successful allocate() calls
    std::uint64_t freed = 0;      // free() calls
    std::uint64_t failed = 0;     // allocate() calls that found nothing
    std::uint64_t in_use = 0;     // frames allocated and not yet freed
    std::uint64_t high_water = 0; // the largest in_use ever seen
};

class FrameSpace {
public:
    // Owns an anonymous mapping of `frames` frames, all allocatable.
    // Throws std::runtime_error when frames == 0 or the host refuses the mapping.
    explicit FrameSpace(std::size_t frames);
    // Over existing memory (KVM mode: guest RAM) that must outlive this
    // object; pfn N is memory[N * 4096, (N + 1) * 4096). Only frames in
    // [first_allocatable, end_allocatable) are handed out. Throws
    // std::invalid_argument unless memory is non-empty, 4 KiB aligned and a
    // whole number of frames, and first_allocatable < end_allocatable <= frames.
    FrameSpace(std::span<std::uint8_t> memory, Pfn first_allocatable, Pfn end_allocatable);
    ~FrameSpace();
    // Tables and address spaces hold references to their frame space: it
    // never moves.
    FrameSpace(const FrameSpace&) = delete;
    FrameSpace& operator=(const FrameSpace&) = delete;

    // A zeroed frame, or nullopt when every allocatable frame is in use.
    // Running out is an ordinary outcome (counted in `failed`), not an error.
    std::optional<Pfn> allocate();
    // Returns a frame. Throws std::logic_error when pfn is outside the
    // allocatable range or not currently allocated (a double free).
    void free(Pfn pfn);

    // The bytes of frame pfn. Throws std::out_of_range unless contains(pfn).
    std::span<std::uint8_t, kFrameSize> bytes(Pfn pfn) const;
    // The 512 64-bit entries of table frame pfn (8-byte aligned, so
    // std::atomic_ref may be used on each). Throws std::out_of_range unless
    // contains(pfn).
    std::uint64_t* entries(Pfn pfn) const;

    // True when pfn names a frame of the region (allocatable or not).
    bool contains(Pfn pfn) const { return pfn < frames_; }
    // True when pfn is in the allocatable range and currently allocated.
    bool is_allocated(Pfn pfn) const;
    Pfn frame_count() const { return frames_; }
    // Size of the allocatable range [first_allocatable, end_allocatable),
    // whether in use or not. Frames free right now: allocatable() - in_use.
    std::size_t allocatable() const { return end_ - first_; }
    Pfn first_allocatable() const { return first_; }
    Pfn end_allocatable() const { return end_; }
    // A consistent snapshot.
    FrameCounters counters() const;

private:
    bool bit(Pfn pfn) const; // caller holds mutex_
    void set_bit(Pfn pfn, bool value);

    std::uint8_t* base_ = nullptr;
    Pfn frames_ = 0;
    Pfn first_ = 0;
    Pfn end_ = 0;
    bool owned_ = false; // base_ is our mmap (fresh frames are zero already)

    // One lock for the allocator. Every allocate() and free() writes the
    // mutex's cache line twice (lock and unlock) plus the lines of the
    // counters, the bitmap word and the top of the free stack: with N threads
    // allocating at once those lines bounce between all N cores and the calls
    // serialise. That is the cost of keeping double-free detection exact and
    // the counters balanced at every instant. Per-thread caches (Linux's
    // per-CPU page lists) would cut it to one locked operation per batch of
    // frames, at the price of frames parked in caches and counters that only
    // balance after draining; they can be added behind this interface when a
    // benchmark shows the lock (count acquisitions: allocated + freed + failed).
    mutable std::mutex mutex_;
    std::vector<Pfn> free_stack_;       // freed frames, reused last-in first-out (cache-warm)
    Pfn next_fresh_ = 0;                // frames [next_fresh_, end_) were never handed out
    std::vector<std::uint64_t> bitmap_; // bit (pfn - first_): allocated
    FrameCounters counters_;
};

} // namespace hv::mmu
