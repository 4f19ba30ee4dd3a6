#pragma once
// The reverse map: for every 4 KiB frame, the guest pages whose secondary
// entries map it. A frame is usually mapped once, so the head word holds
// one guest frame number inline (tagged with bit 0); a second mapping turns
// it into a pointer to a chain of descriptors of N entries each. Only the
// first descriptor of a chain may be partly full; the others are full.
// A descriptor is {count, next, gfns[N]}: N + 2 words, so N = 6, 14, 30, 62
// fill 1, 2, 4, 8 cache lines exactly, and those are aligned to a line.
//
// N = kRmapDescEntries = 30 (256 bytes): `build/bin/rmap_bench` measures
// the choice against 6, 14 and 62 (README.md, "The rmap descriptor size").
//
// Each frame's list has its own lock: bit 1 of its head word (a bit lock,
// as KVM's rmap head has one), set only on a descriptor chain. The common
// cases take no lock at all: adding the first link is one compare-exchange
// of the empty head to the inline form (the second, one compare-exchange to
// a two-link descriptor), and removing an inline link one compare-exchange
// back to empty -- or a plain store when the caller excludes every other
// writer (a zap under an exclusive lock) -- so a fault's rmap add and a
// zap's rmap remove cost at most one atomic read-modify-write each. A chain
// is locked with a compare-exchange setting the bit and unlocked with a
// release store of the new head. Faults on
// different frames never share a lock here whatever the shadow lock policy,
// and add/remove write nothing shared between frames: there are no global
// counters. links() and descriptors() are computed on demand by visiting
// every frame: O(frames), meant for audits, tests and quiescent states, not
// for the fault path. Heads are 8 bytes, 8 to a line, in a line-aligned
// array (FrameSpace::line_owner).
#include "mmu/base/frame_space.hpp"
#include "mmu/base/line_array.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

namespace hv::mmu {

inline constexpr unsigned kRmapDescEntries = 30;

template <unsigned N>
class BasicRmap {
    static_assert(N >= 2, "a descriptor holds at least two links");

public:
    static constexpr unsigned kEntries = N;

    explicit BasicRmap(Pfn frames);
    ~BasicRmap();
    BasicRmap(const BasicRmap&) = delete;
    BasicRmap& operator=(const BasicRmap&) = delete;

    // Who else may add or remove links of this frame while add() or
    // remove() runs. Excluded: nobody (the caller's lock keeps every other
    // writer out), so the empty -> inline and inline -> empty transitions
    // are plain stores instead of compare-exchanges; readers (list, count)
    // may still run: they never lock an empty or inline head.
    enum class Writers { Concurrent, Excluded };
    // Adds the link (pfn, gfn); gfn < 2^62. The same link added twice is
    // held twice. Throws std::out_of_range for a frame outside the map or a
    // gfn too large.
    void add(Pfn pfn, std::uint64_t gfn, Writers writers = Writers::Concurrent);
    // Removes one copy of the link; returns false when it was not there.
    bool remove(Pfn pfn, std::uint64_t gfn, Writers writers = Writers::Concurrent);
    // The links of one frame, in no particular order.
    std::vector<std::uint64_t> list(Pfn pfn) const;
    std::size_t count(Pfn pfn) const;

    // Computed on demand under each frame's lock: O(frames). For audits and
    // quiescent states; while adds and removes run, the result is a sum of
    // per-frame snapshots taken at different times.
    std::size_t descriptors() const;
    std::uint64_t links() const;

    Pfn frames() const { return frames_; }
    // Memory accounting for the bench: one descriptor, and the fixed cost of
    // one frame (head word + lock).
    static constexpr std::size_t descriptor_bytes() { return sizeof(Desc); }
    static constexpr std::size_t frame_bytes() { return sizeof(std::uint64_t); }

private:
    // Whole cache lines when N + 2 words make whole lines.
    static constexpr std::size_t kDescAlign = (N + 2) % 8 == 0 ? 64 : alignof(std::uint64_t);
    struct alignas(kDescAlign) Desc {
        std::uint64_t count = 0;
        Desc* next = nullptr;
        std::uint64_t gfns[N];
    };
    // Head word: 0 (no link), (gfn << 2) | kInline, or a Desc pointer
    // (aligned to at least 8); kLocked may be set on any of them.
    static constexpr std::uint64_t kInline = 1, kLocked = 2;
    static bool is_inline(std::uint64_t head) { return head & kInline; }
    static std::uint64_t inline_head(std::uint64_t gfn) { return (gfn << 2) | kInline; }
    static std::uint64_t inline_gfn(std::uint64_t head) { return head >> 2; }
    static Desc* as_desc(std::uint64_t head) { return reinterpret_cast<Desc*>(head & ~kLocked); }
    // A descriptor chain's head with its lock bit set by us (spinning, then
    // yielding, while another holds it), returned without the bit; unlock()
    // stores the new head. An empty or inline head is returned as it is and
    // nothing is locked: only chains are ever locked, so an inline head only
    // changes by a compare-exchange (or an Excluded remove's store).
    std::uint64_t lock_chain(Pfn pfn) const;
    void unlock(Pfn pfn, std::uint64_t head) const { heads_[pfn].store(head, std::memory_order_release); }
    template <class F>
    void for_each_head(F f) const; // f(head) for every frame, under its lock

    Pfn frames_;
    // Line-aligned: a CPU's aligned chunk of frames has lines of its own
    // here (FrameSpace::line_owner).
    LineArray<std::atomic<std::uint64_t>> heads_;
};

// Instantiated in rmap.cpp for the sizes the bench measures.
extern template class BasicRmap<6>;
extern template class BasicRmap<14>;
extern template class BasicRmap<30>;
extern template class BasicRmap<62>;

using Rmap = BasicRmap<kRmapDescEntries>;

} // namespace hv::mmu
