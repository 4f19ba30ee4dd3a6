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
// Thread safety: allocate(), free(), counters(), is_allocated() and
// line_owner() may be called from any number of threads. bytes(), entries()
// and the geometry queries touch no shared state.
//
// Per-CPU caches. allocate(cpu) serves CPU `cpu` (a vCPU index, below
// kFrameCpus) from its own cache, under a lock in the cache's own cache
// line: no write to a line another CPU writes. An empty cache is refilled
// under the allocator lock with a whole fresh chunk of kFrameChunk frames
// aligned to kFrameChunk (or, once the fresh frames are gone, with frames
// from the free stack or taken from another CPU's cache), so the allocator
// lock is taken once per kFrameChunk frames, as Linux's per-CPU page lists
// take the zone lock once per batch. Because a chunk is aligned, the
// per-frame data that other parts keep in line-aligned arrays (LineArray:
// rmap heads and locks, PT locks, map counts) of that chunk's frames fill
// whole cache lines that only this CPU's frames use: line_owner() says which
// frames are in such a chunk, so counters can tell a private line from a
// shared one. Frames wait in a cache until their CPU asks for them; when
// nothing else is left, allocations take them from the caches, so the
// capacity is exact however the frames are spread. allocate() (no CPU)
// serves from the shared pool under the allocator lock, as before.
#include "mmu/base/cost.hpp"
#include "mmu/base/line_array.hpp"
#include "mmu/base/units.hpp"
#include "mmu/sync/pt_lock.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <vector>

namespace hv::mmu {

using Pfn = std::uint64_t; // a frame number: the frame is bytes [pfn * kPage, (pfn + 1) * kPage)
// 64-bit entries in one table frame.
inline constexpr std::size_t kEntriesPerFrame = kPage / sizeof(std::uint64_t);
// CPU indices with a per-CPU frame cache: 0..kFrameCpus-1 (the vCPU indices).
inline constexpr std::uint32_t kFrameCpus = 1024;
// Frames per cache refill from the fresh range, aligned to this many frames:
// 64 frames fill whole lines of any per-frame array of 1-, 2-, 4- or 8-byte
// elements (64 of 8 bytes are 8 lines).
inline constexpr Pfn kFrameChunk = 64;

// Allocator statistics. allocated - freed == in_use always holds in a
// snapshot from counters(): it takes the allocator lock and every cache's.
struct FrameCounters {
    std::uint64_t allocated = 0;  // successful allocate() calls
    std::uint64_t freed = 0;      // free() calls
    std::uint64_t failed = 0;     // allocate() calls that found nothing
    std::uint64_t in_use = 0;     // frames allocated and not yet freed
    // The largest number of frames ever out of the shared pool: in use, or
    // waiting in a per-CPU cache (without allocate(cpu), the largest in_use).
    std::uint64_t high_water = 0;
    std::uint64_t cached = 0;  // frames waiting in per-CPU caches
    std::uint64_t refills = 0; // per-CPU cache refills (each took the allocator lock)
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
    // Memory someone else can write (KVM mode: guest RAM, which a ring-0
    // guest may write however it likes, through page tables of its own):
    // the frames live in a private anonymous mapping of the same size, which
    // bytes() and entries() return and nobody else can reach, and `memory`
    // only mirrors them for a CPU that walks tables there. Writers of table
    // entries call mirror() after each store; a frame is zeroed in both when
    // handed out. What is in `memory` is never read back, so nothing written
    // there can change what this frame space's users see. Same checks as
    // the constructor above.
    struct Mirror {
        std::span<std::uint8_t> memory;
    };
    FrameSpace(Mirror mirror, Pfn first_allocatable, Pfn end_allocatable);
    ~FrameSpace();
    // Tables and address spaces hold references to their frame space: it
    // never moves.
    FrameSpace(const FrameSpace&) = delete;
    FrameSpace& operator=(const FrameSpace&) = delete;

    static constexpr std::uint32_t kAnyCpu = ~0u;

    // A zeroed frame, or nullopt when every allocatable frame is in use.
    // Running out is an ordinary outcome (counted in `failed`), not an error.
    // From the shared pool under the allocator lock.
    std::optional<Pfn> allocate();
    // The same, from CPU `cpu`'s cache (kAnyCpu or any index >= kFrameCpus:
    // the shared pool). A CPU index is meant to be used by one thread at a
    // time (a vCPU's); others using it at once only wait for its cache lock.
    std::optional<Pfn> allocate(std::uint32_t cpu);
    // And adds what it took to `cost`: the allocator lock's 2 shared-line
    // atomics on a refill or a shared-pool allocation; a cache hit writes
    // only its own CPU's line.
    std::optional<Pfn> allocate(std::uint32_t cpu, Cost& cost);
    // Returns a frame. Throws std::logic_error when pfn is outside the
    // allocatable range or not currently allocated (a double free).
    void free(Pfn pfn);
    // Returns a frame that allocate(cpu) just handed out and nobody wrote or
    // saw (a table that lost a race to be linked) to `cpu`'s cache, so its
    // chunk stays that CPU's (free() would make the chunk's lines shared);
    // through free() when the cache is full or cpu has no cache. Counted as
    // a free. Same errors as free().
    void give_back(Pfn pfn, std::uint32_t cpu);

    // The bytes of frame pfn. Throws std::out_of_range unless contains(pfn).
    std::span<std::uint8_t, kPage> bytes(Pfn pfn) const {
        if (!contains(pfn)) [[unlikely]]
            bad_pfn("bytes", "a pfn", pfn);
        return std::span<std::uint8_t, kPage>(base_ + pfn * kPage, kPage);
    }
    // The 512 64-bit entries of table frame pfn (8-byte aligned, so
    // std::atomic_ref may be used on each). Throws std::out_of_range unless
    // contains(pfn). Inline: every level of every table walk calls it.
    std::uint64_t* entries(Pfn pfn) const {
        if (!contains(pfn)) [[unlikely]]
            bad_pfn("entries", "a table pfn", pfn);
        return reinterpret_cast<std::uint64_t*>(base_ + pfn * kPage);
    }

    // True when pfn names a frame of the region (allocatable or not).
    bool contains(Pfn pfn) const { return pfn < frames_; }
    // True when pfn is in the allocatable range and currently allocated
    // (handed out; a frame waiting in a per-CPU cache is not).
    bool is_allocated(Pfn pfn) const;
    // The CPU whose cache received the whole aligned chunk of kFrameChunk
    // frames holding pfn, while none of that chunk has been freed or moved to
    // another CPU since: then the lines of line-aligned per-frame arrays
    // covering pfn are written for that CPU's frames only. nullopt otherwise
    // (the frame came from the shared pool or a mixed chunk).
    std::optional<std::uint32_t> line_owner(Pfn pfn) const {
        if (pfn >= frames_) return std::nullopt;
        const std::uint16_t o = (*chunk_owner_)[pfn / kFrameChunk].load(std::memory_order_relaxed);
        if (o == 0) return std::nullopt;
        return static_cast<std::uint32_t>(o - 1);
    }
    Pfn frame_count() const { return frames_; }
    // True when both are over the same memory (pfn N names the same bytes),
    // or one mirrors its frames into the other's memory.
    bool same_memory(const FrameSpace& o) const {
        return frames_ == o.frames_ && (base_ == o.base_ || (mirror_ && mirror_ == o.base_) ||
                                        (o.mirror_ && o.mirror_ == base_));
    }
    // A Mirror space: copies the entry at `entry` (a pointer into
    // entries()), just written, to the same place in the mirror. No-op
    // otherwise. Two writers of one entry may mirror in either order, so the
    // copy is repeated until the entry did not change meanwhile: the last
    // writer to finish leaves the current value in the mirror.
    void mirror(const std::uint64_t* entry) const {
        if (!mirror_) return;
        const auto offset = static_cast<std::size_t>(reinterpret_cast<const std::uint8_t*>(entry) - base_);
        std::atomic_ref<std::uint64_t> copy(*reinterpret_cast<std::uint64_t*>(mirror_ + offset));
        std::atomic_ref<const std::uint64_t> from(*entry);
        for (std::uint64_t v = from.load(std::memory_order_seq_cst);;) {
            copy.store(v, std::memory_order_seq_cst);
            const std::uint64_t now = from.load(std::memory_order_seq_cst);
            if (now == v) return;
            v = now;
        }
    }
    bool mirrored() const { return mirror_ != nullptr; }
    // Size of the allocatable range [first_allocatable, end_allocatable),
    // whether in use or not. Frames free right now: allocatable() - in_use.
    std::size_t allocatable() const { return end_ - first_; }
    Pfn first_allocatable() const { return first_; }
    Pfn end_allocatable() const { return end_; }
    // A consistent snapshot.
    FrameCounters counters() const;

private:
    [[noreturn, gnu::cold, gnu::noinline]] void bad_pfn(const char* op, const char* what, Pfn pfn) const;
    static constexpr Pfn kZeroBit = Pfn{1} << 63; // in a cache: the frame must be zeroed when handed out
    struct alignas(kCacheLine) CpuCache {
        PtLock lock;
        std::uint32_t count = 0;     // under lock
        std::uint64_t allocated = 0; // under lock: allocate(cpu) calls served here
        std::uint64_t given_back = 0; // under lock: give_back() calls served here
        Pfn frames[kFrameChunk];     // under lock; handed out from the top
    };
    // Under mutex_ (steal: and the victim's lock).
    bool take_from_pool(Pfn& entry);            // an entry (pfn | kZeroBit as needed) from the pool
    bool steal(CpuCache& into, std::uint32_t thief); // half of another cache's frames
    bool steal_one(Pfn& entry);                 // one frame from any cache
    void refill(CpuCache& c, std::uint32_t cpu);
    void took(std::uint64_t n);                 // n more frames out of the pool
    Pfn hand_out(Pfn entry);                    // marks it allocated; zeroes it outside any lock

    std::uint8_t* base_ = nullptr;
    std::uint8_t* mirror_ = nullptr; // Mirror spaces: the memory mirrored
    Pfn frames_ = 0;
    Pfn first_ = 0;
    Pfn end_ = 0;
    bool owned_ = false; // base_ is our mmap (fresh frames are zero already)

    // The allocator lock, for the shared pool, refills and counters. Every
    // allocate() without a CPU and every free() writes the mutex's cache line
    // twice (lock and unlock) plus the lines of the counters and the top of
    // the free stack: with N threads allocating at once those lines bounce
    // between all N cores and the calls serialise. allocate(cpu) takes it
    // once per refill only (see the header comment).
    mutable std::mutex mutex_;
    std::vector<Pfn> free_stack_;       // freed frames, reused last-in first-out (cache-warm)
    Pfn next_fresh_ = 0;                // frames [next_fresh_, end_) were never handed out
    FrameCounters counters_;            // shared-pool allocations, frees, failures, high water, refills
    std::uint64_t taken_ = 0;           // frames out of the pool: in use or cached
    // Made once the geometry is checked (a bad size must fail as such, not as
    // an allocation failure of these).
    std::optional<LineArray<std::atomic<std::uint8_t>>> state_;        // by pfn: 1 = handed out (allocated)
    std::optional<LineArray<std::atomic<std::uint16_t>>> chunk_owner_; // by pfn / kFrameChunk: line_owner() + 1, or 0
    std::unique_ptr<std::atomic<CpuCache*>[]> caches_;  // kFrameCpus; created under mutex_, never freed before us
};

} // namespace hv::mmu
