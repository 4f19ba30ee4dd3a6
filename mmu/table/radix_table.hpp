#pragma once
// RadixTable<Format>: the one page-table walker. A 4-level radix tree of
// 512-entry table frames over a FrameSpace, translating 48-bit addresses in
// 4 KiB pages (9 index bits per level: 47:39, 38:30, 29:21, 20:12). The
// format class encodes and decodes entries; this class has three verbs -
// walk (to addr's leaf slot), lookup and update (an entry) - and a batch
// iterator over a range with its resume point (radix_range.hpp), so EPT and
// x86-64 tables share every line of it.
//
// Levels are numbered as the SDM does: 4 = the root (PML4), 3 = PDPT,
// 2 = PD, 1 = PT (the leaf table; its entries map 4 KiB pages). One entry at
// level L maps span(L) bytes: 4 KiB, 2 MiB, 1 GiB, 512 GiB.
//
// Concurrency. Every entry is read and written through
// std::atomic_ref<std::uint64_t> (table frames are 4 KiB aligned, so every
// entry is 8-byte aligned): a concurrent walker - a software vCPU, another
// fault - sees either the old or the new entry, never a torn one. Loads
// acquire and stores release, so a walker that sees a table pointer also
// sees the zeroed contents of that table. Tables are only ever added
// concurrently (walk_or_create publishes each new table with a
// compare-exchange, so racing threads link one table and the losers free
// theirs); they are removed only by free_empty_tables() and destroy(), which
// need the caller to exclude every other user (see there). Leaf entries are
// the caller's: load / store / compare_exchange / exchange on a Slot, under
// whatever lock policy the caller follows.
//
// Large leaves. Only 4 KiB leaves are created here, but the walkers
// understand a present entry with the format's large bit at level 2 (2 MiB)
// or 3 (1 GiB): walk() stops there with LargeLeaf, for_each_leaf visits it
// once with its own (aligned) address, and free/destroy do not descend into
// it (it maps data, not a table). Bit 7 of a root entry is reserved in both
// formats and is never taken as a large page.
//
// Errors (table_errors.hpp): std::out_of_range for an address at or above
// 2^48 or a bad range; std::logic_error for a destroyed or moved-from table.
#include "mmu/base/frame_space.hpp"
#include "mmu/table/entry_format.hpp"
#include "mmu/table/leaf_cache.hpp"
#include "mmu/table/table_errors.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <utility>

namespace hv::mmu {

enum class WalkStatus {
    Found,        // slot is the 4 KiB leaf entry for the address (present or not)
    MissingTable, // slot is the non-present entry where the next table would be linked
    LargeLeaf,    // slot is a present large leaf (level 2 or 3) covering the address
    OutOfFrames,  // walk_or_create: like MissingTable, and no frame was left to fill it
};

constexpr const char* to_string(WalkStatus s) {
    switch (s) {
    case WalkStatus::Found: return "found";
    case WalkStatus::MissingTable: return "missing-table";
    case WalkStatus::LargeLeaf: return "large-leaf";
    case WalkStatus::OutOfFrames: return "out-of-frames";
    }
    return "?";
}

template <EntryFormat Format>
class RadixTable {
public:
    using format_type = Format;
    static constexpr unsigned kLevels = 4;
    static constexpr unsigned kIndexBits = 9;
    static constexpr unsigned kEntries = 1u << kIndexBits;
    static constexpr unsigned kAddressBits = kPageShift + kLevels * kIndexBits; // 48
    static constexpr std::uint64_t kAddressEnd = std::uint64_t{1} << kAddressBits;
    static constexpr unsigned kMaxLargeLevel = 3;
    static_assert(kEntries == kEntriesPerFrame);

    // Bytes one entry at `level` maps.
    static constexpr std::uint64_t span(unsigned level) {
        return std::uint64_t{1} << (kPageShift + kIndexBits * (level - 1));
    }
    // The index of addr's entry in its level-`level` table.
    static constexpr unsigned index(std::uint64_t addr, unsigned level) {
        return static_cast<unsigned>(addr >> (kPageShift + kIndexBits * (level - 1))) & (kEntries - 1);
    }

    // One entry of one table. For a leaf, `table` is the pfn of the leaf
    // table holding it: the identity of its split PT lock.
    struct Slot {
        std::uint64_t* entry = nullptr;
        Pfn table = 0;
        unsigned index = 0;
        unsigned level = 1; // of `table`: 1 for a 4 KiB leaf, 2 for a 2 MiB leaf, ...
    };
    struct WalkResult {
        WalkStatus status = WalkStatus::MissingTable;
        Slot slot;
        // walk_or_create: what creating tables cost, for callers that count
        // (see walk_or_create). Zero when every table existed.
        std::uint32_t tables_linked = 0; // tables this walk linked (not lost to a racer)
        Cost cost;                       // frame allocator and cache locks; lines other CPUs write
        bool found() const { return status == WalkStatus::Found; }
    };

    // A table with an empty root, or nullopt when no frame is left for it.
    static std::optional<RadixTable> create(FrameSpace& frames) {
        auto root = frames.allocate();
        if (!root) return std::nullopt;
        return RadixTable(frames, *root);
    }

    RadixTable(RadixTable&& other) noexcept
        : frames_(std::exchange(other.frames_, nullptr)), root_(std::exchange(other.root_, 0)) {}
    RadixTable& operator=(RadixTable&& other) noexcept {
        if (this != &other) {
            destroy();
            frames_ = std::exchange(other.frames_, nullptr);
            root_ = std::exchange(other.root_, 0);
        }
        return *this;
    }
    RadixTable(const RadixTable&) = delete;
    RadixTable& operator=(const RadixTable&) = delete;
    ~RadixTable() { destroy(); }

    // Frees every table frame, root included (the frames leaves point to are
    // not ours and are left alone). Afterwards the object is empty, as a
    // moved-from one is: only destruction and assignment are allowed. The
    // caller guarantees nobody else uses the table.
    void destroy() {
        if (!frames_) return;
        free_subtree(root_, kLevels);
        frames_ = nullptr;
        root_ = 0;
    }

    bool valid() const { return frames_ != nullptr; }
    Pfn root() const {
        require_valid("root");
        return root_;
    }
    FrameSpace& frames() const {
        require_valid("frames");
        return *frames_;
    }

    // ---- Walk: to addr's leaf slot (the low 12 bits of addr are ignored) ---

    // Without allocating.
    WalkResult walk(std::uint64_t addr) const {
        require_address("walk", addr);
        return descend<false>(addr, FrameSpace::kAnyCpu);
    }

    // Linking a new zeroed table wherever one is missing. Racing callers
    // link exactly one table per slot; a loser frees its frame and follows
    // the winner's. When the frame space runs out the result is
    // OutOfFrames; tables linked before that stay linked (they are part of
    // the tree, freed by free_empty_tables or destroy), so no frame is ever
    // lost. New tables come from CPU `cpu`'s frame cache
    // (FrameSpace::allocate(cpu); kAnyCpu: the shared pool).
    //
    // Costs (WalkResult): the allocator's, plus one shared read-modify-write
    // per compare-exchange linking a table: the parent's line holds the
    // entries of 8 neighbouring tables (16 MiB of address space below a
    // level-2 table), which other CPUs' tables are linked into; and a
    // loser's free (the allocator lock).
    WalkResult walk_or_create(std::uint64_t addr, std::uint32_t cpu = FrameSpace::kAnyCpu) {
        require_address("walk_or_create", addr);
        return descend<true>(addr, cpu);
    }

    // Slot of addr's entry in leaf table `leaf_table`, which the caller
    // knows covers addr (from an earlier walk: see LeafCache).
    Slot leaf_slot(Pfn leaf_table, std::uint64_t addr) const { return slot_at(leaf_table, 1, index(addr, 1)); }

    // The 4 KiB leaf slot for addr, or nullopt when a table on the way is
    // missing or a large leaf covers addr (walk() says which).
    std::optional<Slot> find_leaf(std::uint64_t addr) const { return found_slot(walk(addr)); }
    // The 4 KiB leaf slot for addr, creating tables on the way; nullopt when
    // the frame space is exhausted or a large leaf covers addr
    // (walk_or_create() says which).
    std::optional<Slot> ensure_leaf(std::uint64_t addr, std::uint32_t cpu = FrameSpace::kAnyCpu) {
        return found_slot(walk_or_create(addr, cpu));
    }

    // Copies the entry of every level on the way to addr (as far as the
    // entries are present) to the frame space's mirror (FrameSpace::mirror).
    void mirror_path(std::uint64_t addr) const {
        Pfn table = root_;
        for (unsigned level = kLevels;; --level) {
            const Slot slot = slot_at(table, level, index(addr, level));
            frames_->mirror(slot.entry);
            const std::uint64_t e = load(slot);
            if (level == 1 || !Format::present(e) || is_large_leaf(e, level)) return;
            table = Format::pfn(e);
        }
    }

    // ---- Lookup: read an entry (atomic; see the header comment) ------------

    static std::uint64_t load(const Slot& s) { return ref(s).load(std::memory_order_acquire); }
    // addr's 4 KiB leaf entry, or 0 when no table covers it (or a large leaf does).
    std::uint64_t lookup(std::uint64_t addr) const {
        const auto slot = find_leaf(addr);
        return slot ? load(*slot) : 0;
    }

    // ---- Update: write an entry (atomic; see the header comment) -----------

    static void store(const Slot& s, std::uint64_t value) { ref(s).store(value, std::memory_order_release); }
    // On failure `expected` receives the current value.
    static bool compare_exchange(const Slot& s, std::uint64_t& expected, std::uint64_t desired) {
        return ref(s).compare_exchange_strong(expected, desired, std::memory_order_acq_rel,
                                              std::memory_order_acquire);
    }
    static std::uint64_t exchange(const Slot& s, std::uint64_t value) {
        return ref(s).exchange(value, std::memory_order_acq_rel);
    }

    // Stores `entry` into addr's 4 KiB leaf slot, replacing whatever was
    // there. False when the frame space is exhausted or a large leaf covers addr.
    bool map(std::uint64_t addr, std::uint64_t entry) {
        const auto slot = ensure_leaf(addr);
        if (!slot) return false;
        store(*slot, entry);
        return true;
    }
    // Clears addr's 4 KiB leaf entry and returns the old one (0 when no
    // table covers addr). Throws std::logic_error when a large leaf covers
    // addr: splitting it is the caller's decision, not a side effect.
    std::uint64_t unmap(std::uint64_t addr) {
        const WalkResult r = walk(addr);
        if (r.status == WalkStatus::LargeLeaf)
            detail::table_large_leaf(Format::name, "unmap", addr, load(r.slot), r.slot.level);
        if (!r.found()) return 0;
        return exchange(r.slot, 0);
    }

    // ---- Ranges (defined in radix_range.hpp) -------------------------------
    // Ranges are half-open [start, end) with start <= end <= 2^48 (else
    // std::out_of_range). An entry is in the range when the memory it maps
    // overlaps it. Missing tables are skipped whole: the cost is one load per
    // entry of the tables that exist.

    // The batch iterator. Pre-order walk calling fn(addr, slot) for every
    // PRESENT leaf in the range, in address order; addr is the start of the
    // memory the leaf maps (for a large leaf, its 2 MiB / 1 GiB aligned
    // start, which may lie below `start`; slot.level tells the size). Stops
    // after max_present visits (0 = no limit) and returns the resume point:
    // just past the last visited leaf, or `end` when the range is done.
    //
    // Use: visit up to a batch under a lock, drop the lock, call again from
    // the resume point. Leaves below it are never visited again by the
    // resumed walk, leaves at or above it are, whatever changed in between.
    // fn may change the entry it is given (and others), but must not free
    // tables.
    template <class Fn>
    std::uint64_t for_each_leaf(std::uint64_t start, std::uint64_t end, std::size_t max_present, Fn&& fn) const;

    // Calls fn(table_pfn, table_start_addr) for every existing 4 KiB leaf
    // table (level 1) whose 2 MiB overlaps the range, in address order: the
    // unit of split PT locking. Returns how many were visited.
    template <class Fn>
    std::size_t for_each_leaf_table(std::uint64_t start, std::uint64_t end, Fn&& fn) const;

    // Unlinks and frees every non-root table that overlaps the range and
    // whose 512 entries are all zero (checked bottom-up, so a table emptied
    // by freeing its children goes too). Returns the number freed.
    //
    // Exclusion: the caller guarantees that nobody else walks or holds a
    // Slot into any table overlapping the range for the duration (e.g. the
    // global or writer lock) - a table that overlaps the range also serves
    // addresses outside it. A hardware walker (a KVM vCPU on these tables)
    // may cache a paging-structure entry past the unlink: use the overload
    // with `release` to defer the frees until after the shootdown.
    std::size_t free_empty_tables(std::uint64_t start, std::uint64_t end);
    // As above, but hands each unlinked frame to release(Pfn) instead of
    // freeing it; the caller owns the frame from then on.
    template <class Release>
    std::size_t free_empty_tables(std::uint64_t start, std::uint64_t end, Release&& release);

    // Table frames in the tree, root included (a walk; for tests and audits).
    std::size_t count_tables() const;

private:
    RadixTable(FrameSpace& frames, Pfn root) : frames_(&frames), root_(root) {}

    static std::atomic_ref<std::uint64_t> ref(const Slot& s) { return std::atomic_ref<std::uint64_t>(*s.entry); }

    static bool is_large_leaf(std::uint64_t e, unsigned level) {
        return level >= 2 && level <= kMaxLargeLevel && Format::is_large(e);
    }
    // A present entry at `level` that points to a table of level - 1.
    static bool is_table(std::uint64_t e, unsigned level) {
        return level >= 2 && Format::present(e) && !is_large_leaf(e, level);
    }

    Slot slot_at(Pfn table, unsigned level, unsigned i) const {
        return Slot{frames_->entries(table) + i, table, i, level};
    }

    static std::optional<Slot> found_slot(const WalkResult& r) {
        return r.found() ? std::optional<Slot>(r.slot) : std::nullopt;
    }

    // The one descent behind walk (Create = false: stop at a missing table)
    // and walk_or_create (link one there).
    template <bool Create>
    WalkResult descend(std::uint64_t addr, std::uint32_t cpu) const {
        WalkResult r;
        Cost cost;
        Pfn table = root_;
        for (unsigned level = kLevels;; --level) {
            const Slot slot = slot_at(table, level, index(addr, level));
            if (level == 1) return costed(r, WalkStatus::Found, slot, cost);
            std::uint64_t e = load(slot);
            if (!Format::present(e)) {
                if constexpr (!Create) return costed(r, WalkStatus::MissingTable, slot, cost);
                else if (!link_table(slot, e, cpu, r, cost)) return costed(r, WalkStatus::OutOfFrames, slot, cost);
            }
            if (is_large_leaf(e, level)) return costed(r, WalkStatus::LargeLeaf, slot, cost);
            table = Format::pfn(e);
        }
    }

    // Links a new zeroed table into `slot` (holding `e`, not present) or
    // follows a racer's; `e` then holds the link. False: no frame left.
    bool link_table(const Slot& slot, std::uint64_t& e, std::uint32_t cpu, WalkResult& r, Cost& cost) const {
        while (!Format::present(e)) {
            const auto fresh = frames_->allocate(cpu, cost);
            if (!fresh) return false;
            const std::uint64_t link = Format::make_table(*fresh);
            ++cost.shared_atomics;
            if (compare_exchange(slot, e, link)) {
                frames_->mirror(slot.entry);
                e = link;
                ++r.tables_linked;
                return true;
            }
            // Lost: e now holds what the winner stored. Our frame was never
            // visible to anyone, so it goes straight back to our cache (its
            // lock, private).
            frames_->give_back(*fresh, cpu);
            cost.locks += 1;
            if (cpu >= kFrameCpus) cost.shared_atomics += 2;
        }
        return true;
    }

    static WalkResult costed(WalkResult r, WalkStatus status, const Slot& slot, const Cost& cost) {
        r.status = status;
        r.slot = slot;
        r.cost = cost;
        return r;
    }

    // The recursions behind the range walks and destroy (radix_range.hpp).
    // for_each_entry calls fn(slot, entry, addr) for each entry of the table
    // starting at `base` that overlaps [start, end) until fn returns true.
    template <class Fn>
    struct LeafWalk;
    template <class Fn>
    bool for_each_entry(Pfn table, unsigned level, std::uint64_t base, std::uint64_t start, std::uint64_t end,
                        Fn&& fn) const;
    template <class W>
    bool visit_leaves(Pfn table, unsigned level, std::uint64_t base, std::uint64_t start, W& w) const;
    template <class Fn>
    std::size_t visit_leaf_tables(Pfn table, unsigned level, std::uint64_t base, std::uint64_t start,
                                  std::uint64_t end, Fn& fn) const;
    template <class Release>
    std::size_t prune(Pfn table, unsigned level, std::uint64_t base, std::uint64_t start, std::uint64_t end,
                      Release& release);
    bool table_empty(Pfn table) const;
    void free_subtree(Pfn table, unsigned level);
    std::size_t count_subtree(Pfn table, unsigned level) const;

    void require_valid(const char* op) const {
        if (!frames_) [[unlikely]]
            detail::table_not_live(Format::name, op);
    }
    void require_address(const char* op, std::uint64_t addr) const {
        if (!frames_ || addr >= kAddressEnd) [[unlikely]]
            detail::table_bad_address(Format::name, op, frames_ != nullptr, addr, kAddressEnd, kAddressBits);
    }
    void require_range(const char* op, std::uint64_t start, std::uint64_t end) const {
        if (!frames_ || start > end || end > kAddressEnd) [[unlikely]]
            detail::table_bad_range(Format::name, op, frames_ != nullptr, start, end, kAddressEnd);
    }

    FrameSpace* frames_ = nullptr; // null: destroyed or moved from
    Pfn root_ = 0;
};

} // namespace hv::mmu

#include "mmu/table/radix_range.hpp"
