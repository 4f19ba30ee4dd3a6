#pragma once
// RadixTable's range walks: the batch iterator (for_each_leaf) with its
// resume point, the leaf-table walk, pruning of empty tables, and the
// whole-tree recursions of count_tables and destroy. Contracts are at the
// declarations in radix_table.hpp, which includes this file; every
// recursion takes the table's frame, its level and the address it starts at.
#include "mmu/table/radix_table.hpp"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace hv::mmu {

namespace detail {

// The first entry of a level table starting at `base`, each entry spanning
// `span` bytes, that overlaps [start, ...).
constexpr unsigned first_index(std::uint64_t base, std::uint64_t start, std::uint64_t span) {
    return start > base ? static_cast<unsigned>((start - base) / span) : 0;
}

} // namespace detail

// The batch iterator's state: where the range ends, the visit budget, and
// the resume point it returns.
template <EntryFormat Format>
template <class Fn>
struct RadixTable<Format>::LeafWalk {
    std::uint64_t end;
    std::size_t budget; // 0: unlimited
    std::size_t visited;
    std::uint64_t resume;
    Fn& fn;
};

template <EntryFormat Format>
template <class Fn>
std::uint64_t RadixTable<Format>::for_each_leaf(std::uint64_t start, std::uint64_t end, std::size_t max_present,
                                                Fn&& fn) const {
    require_range("for_each_leaf", start, end);
    LeafWalk<std::remove_reference_t<Fn>> w{end, max_present, 0, end, fn};
    if (start < end) visit_leaves(root_, kLevels, 0, start, w);
    return w.resume;
}

template <EntryFormat Format>
template <class Fn>
bool RadixTable<Format>::for_each_entry(Pfn table, unsigned level, std::uint64_t base, std::uint64_t start,
                                        std::uint64_t end, Fn&& fn) const {
    for (unsigned i = detail::first_index(base, start, span(level)); i < kEntries; ++i) {
        const std::uint64_t at = base + i * span(level);
        if (at >= end) return false;
        const Slot slot = slot_at(table, level, i);
        if (fn(slot, load(slot), at)) return true;
    }
    return false;
}

// Its own loop, not for_each_entry: this is the hot one (every zap), and
// the recursion through a callback costs it.
template <EntryFormat Format>
template <class W>
bool RadixTable<Format>::visit_leaves(Pfn table, unsigned level, std::uint64_t base, std::uint64_t start,
                                      W& w) const {
    for (unsigned i = detail::first_index(base, start, span(level)); i < kEntries; ++i) {
        const std::uint64_t at = base + i * span(level);
        if (at >= w.end) return false;
        const Slot slot = slot_at(table, level, i);
        const std::uint64_t e = load(slot);
        if (!Format::present(e)) continue;
        if (is_table(e, level)) {
            if (visit_leaves(Format::pfn(e), level - 1, at, start, w)) return true;
            continue;
        }
        w.fn(at, slot);
        if (w.budget != 0 && ++w.visited == w.budget) {
            w.resume = std::min(at + span(level), w.end);
            return true;
        }
    }
    return false;
}

template <EntryFormat Format>
template <class Fn>
std::size_t RadixTable<Format>::for_each_leaf_table(std::uint64_t start, std::uint64_t end, Fn&& fn) const {
    require_range("for_each_leaf_table", start, end);
    if (start == end) return 0;
    return visit_leaf_tables(root_, kLevels, 0, start, end, fn);
}

template <EntryFormat Format>
template <class Fn>
std::size_t RadixTable<Format>::visit_leaf_tables(Pfn table, unsigned level, std::uint64_t base, std::uint64_t start,
                                                  std::uint64_t end, Fn& fn) const {
    std::size_t n = 0;
    for_each_entry(table, level, base, start, end, [&](const Slot&, std::uint64_t e, std::uint64_t at) {
        if (!is_table(e, level)) return false;
        if (level == 2) {
            fn(Format::pfn(e), at);
            ++n;
        } else {
            n += visit_leaf_tables(Format::pfn(e), level - 1, at, start, end, fn);
        }
        return false;
    });
    return n;
}

template <EntryFormat Format>
std::size_t RadixTable<Format>::free_empty_tables(std::uint64_t start, std::uint64_t end) {
    return free_empty_tables(start, end, [this](Pfn pfn) { frames_->free(pfn); });
}

template <EntryFormat Format>
template <class Release>
std::size_t RadixTable<Format>::free_empty_tables(std::uint64_t start, std::uint64_t end, Release&& release) {
    require_range("free_empty_tables", start, end);
    if (start == end) return 0;
    return prune(root_, kLevels, 0, start, end, release);
}

template <EntryFormat Format>
template <class Release>
std::size_t RadixTable<Format>::prune(Pfn table, unsigned level, std::uint64_t base, std::uint64_t start,
                                      std::uint64_t end, Release& release) {
    std::size_t freed = 0;
    for_each_entry(table, level, base, start, end, [&](const Slot& slot, std::uint64_t e, std::uint64_t at) {
        if (!is_table(e, level)) return false;
        const Pfn child = Format::pfn(e);
        if (level > 2) freed += prune(child, level - 1, at, start, end, release);
        if (table_empty(child)) {
            store(slot, 0); // unlink before the frame can be reused
            frames_->mirror(slot.entry);
            release(child);
            ++freed;
        }
        return false;
    });
    return freed;
}

template <EntryFormat Format>
bool RadixTable<Format>::table_empty(Pfn table) const {
    for (unsigned i = 0; i < kEntries; ++i)
        if (load(slot_at(table, 1, i)) != 0) return false;
    return true;
}

template <EntryFormat Format>
std::size_t RadixTable<Format>::count_tables() const {
    require_valid("count_tables");
    return count_subtree(root_, kLevels);
}

template <EntryFormat Format>
std::size_t RadixTable<Format>::count_subtree(Pfn table, unsigned level) const {
    std::size_t n = 1;
    if (level >= 2) {
        for (unsigned i = 0; i < kEntries; ++i) {
            const std::uint64_t e = load(slot_at(table, level, i));
            if (is_table(e, level)) n += count_subtree(Format::pfn(e), level - 1);
        }
    }
    return n;
}

template <EntryFormat Format>
void RadixTable<Format>::free_subtree(Pfn table, unsigned level) {
    if (level >= 2) {
        for (unsigned i = 0; i < kEntries; ++i) {
            const std::uint64_t e = load(slot_at(table, level, i));
            if (is_table(e, level)) free_subtree(Format::pfn(e), level - 1);
        }
    }
    frames_->free(table);
}

} // namespace hv::mmu
