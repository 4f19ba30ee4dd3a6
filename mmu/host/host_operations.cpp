// The host operations that change mappings: unmap, protect, migrate,
// merge, swap-out and aging, each bracketed by the notifier chain as
// host_address_space.hpp lists. Faults and the rest of the address space
// are in host_address_space.cpp.
#include "mmu/host/host_address_space.hpp"

#include "mmu/base/units.hpp"
#include "mmu/sync/sched_point.hpp"

#include <algorithm>
#include <cstring>
#include <mutex>
#include <vector>

namespace hv::mmu {
namespace {
constexpr std::uint64_t kTableSpan = 512 * kPage; // what one leaf table maps

// Calls fn(table_pfn, first_address, entries) for each existing leaf table
// overlapping [start, end), with `entries` limited to the part inside the range.
template <class Table, class Fn>
void for_each_table_part(Table& table, std::uint64_t start, std::uint64_t end, Fn&& fn) {
    table.for_each_leaf_table(start, end, [&](Pfn pfn, std::uint64_t table_start) {
        const std::uint64_t lo = std::max(start, table_start);
        const std::uint64_t hi = std::min(end, table_start + kTableSpan);
        fn(pfn, lo, hi);
    });
}

} // namespace

// Calls fn(address, entry) for every PTE slot of [range) that has a leaf
// table, holding each leaf table's PT lock: the
// walk unmap, protect and age share.
template <class Fn>
void HostAddressSpace::for_each_locked_pte(HostRange range, Fn&& fn) {
    for_each_table_part(table_, range.start, range.end, [&](Pfn table, std::uint64_t lo, std::uint64_t hi) {
        std::lock_guard guard(pt_lock(table));
        count(Count::PtLocks);
        std::uint64_t* entries = frames_.entries(table);
        for (std::uint64_t a = lo; a < hi; a += kPage) fn(a, at(&entries[(a >> 12) & 511]));
    });
}

std::size_t HostAddressSpace::unmap(HostRange range) {
    std::optional<RangeInvalidation> inv;
    if (!page_at_a_time_) inv = chain_.begin(range, InvalidateEvent::Unmap, true);
    sched::point(sched::Point::InvalidateStarted);
    std::size_t changed = 0;
    std::vector<Pfn> to_put;
    std::vector<std::uint64_t> slots_to_drop;
    for_each_locked_pte(range, [&](std::uint64_t a, std::atomic_ref<std::uint64_t> entry) {
        const std::uint64_t pte = entry.exchange(0, std::memory_order_acq_rel);
        if (Pte::present(pte)) {
            to_put.push_back(Pte::pfn(pte));
            ++changed;
            if (page_at_a_time_) fire_page(a, InvalidateEvent::Unmap);
        } else if (is_swap_entry(pte)) {
            slots_to_drop.push_back(pte >> 12);
            ++changed;
        }
    });
    sched::point(sched::Point::HostPtesChanged);
    if (inv) inv->end();
    for (Pfn pfn : to_put) put_frame(pfn);
    if (!slots_to_drop.empty()) {
        std::lock_guard swap(swap_mutex_);
        for (auto s : slots_to_drop) swap_.erase(s);
    }
    count(Count::Unmapped, changed);
    return changed;
}

std::size_t HostAddressSpace::protect(HostRange range, bool writable) {
    // Future faults follow the region's permission; present PTEs change now.
    {
        std::unique_lock regions(regions_lock_);
        // Split regions at the range boundaries, then set the permission inside.
        for (std::uint64_t cut : {range.start, range.end}) {
            auto it = regions_.upper_bound(cut);
            if (it == regions_.begin()) continue;
            --it;
            if (it->first < cut && cut < it->second.end) {
                regions_.emplace(cut, Region{it->second.end, it->second.writable});
                it->second.end = cut;
            }
        }
        for (auto it = regions_.lower_bound(range.start); it != regions_.end() && it->first < range.end; ++it)
            it->second.writable = writable;
    }
    std::optional<RangeInvalidation> inv;
    if (!page_at_a_time_) inv = chain_.begin(range, InvalidateEvent::Protect, true);
    sched::point(sched::Point::InvalidateStarted);
    std::size_t changed = 0;
    for_each_locked_pte(range, [&](std::uint64_t a, std::atomic_ref<std::uint64_t> entry) {
        const std::uint64_t pte = entry.load(std::memory_order_acquire);
        if (!Pte::present(pte)) return;
        // A merged page stays read-only: a write must break the sharing.
        const bool w = writable && !(pte & kMergedBit);
        if (Pte::writable(pte) == w) return;
        entry.store(Pte::with_writable(pte, w), std::memory_order_release);
        ++changed;
        if (page_at_a_time_) fire_page(a, InvalidateEvent::Protect);
    });
    sched::point(sched::Point::HostPtesChanged);
    if (inv) inv->end();
    count(Count::Protected, changed);
    return changed;
}

// The shape migrate and swap_out share: bracket one page with start/end (or
// fire invalidate_page under its PT lock in page-at-a-time mode) and let
// `change` copy the contents and rewrite a present, unshared PTE under its
// PT lock. `change` returns the frame that stops being mapped there, or
// nullopt to leave it. In page-at-a-time mode the PTE is cleared and the
// page invalidated before `change` reads the contents (as the kernel
// clears, flushes and notifies before it copies): a secondary TLB that
// still held the translation could otherwise store after the copy, and
// the store would be lost. Nothing maps the page in between: faults wait
// for the PT lock.
template <class Change>
std::optional<Pfn> HostAddressSpace::change_page(std::uint64_t address, InvalidateEvent event, Change&& change) {
    const HostRange page{address, address + kPage};
    std::optional<RangeInvalidation> inv;
    if (!page_at_a_time_) inv = chain_.begin(page, event, true);
    sched::point(sched::Point::InvalidateStarted);
    std::optional<Pfn> old;
    {
        if (auto slot = table_.find_leaf(address)) {
            std::lock_guard guard(pt_lock(slot->table));
            count(Count::PtLocks);
            auto entry = at(slot->entry);
            const std::uint64_t pte = entry.load(std::memory_order_acquire);
            // Shared (merged) frames are left alone, as the kernel's migration
            // and swapping of KSM pages are special cases.
            if (Pte::present(pte) && !(pte & kMergedBit)) {
                if (page_at_a_time_) {
                    entry.store(0, std::memory_order_release);
                    fire_page(address, event);
                }
                old = change(entry, pte);
                if (!old && page_at_a_time_) entry.store(pte, std::memory_order_release); // left as it was
            }
        }
    }
    sched::point(sched::Point::HostPtesChanged);
    if (inv) inv->end();
    return old;
}

bool HostAddressSpace::migrate(std::uint64_t address) {
    address &= ~(kPage - 1);
    auto fresh = new_frame();
    if (!fresh) return false;
    const auto old = change_page(address, InvalidateEvent::Migrate, [&](auto entry, std::uint64_t pte) {
        const Pfn from = Pte::pfn(pte);
        std::memcpy(data_.bytes(*fresh).data(), data_.bytes(from).data(), kPage);
        entry.store(Pte::with_pfn(pte, *fresh), std::memory_order_release);
        return std::optional<Pfn>(from);
    });
    put_frame(old ? *old : *fresh);
    if (old) count(Count::Migrated);
    return old.has_value();
}

bool HostAddressSpace::merge(std::uint64_t keep, std::uint64_t other) {
    keep &= ~(kPage - 1);
    other &= ~(kPage - 1);
    if (keep == other) return false;
    auto inv_keep = chain_.begin({keep, keep + kPage}, InvalidateEvent::Merge, true);
    auto inv_other = chain_.begin({other, other + kPage}, InvalidateEvent::Merge, true);
    sched::point(sched::Point::InvalidateStarted);
    std::optional<Pfn> dropped;
    {
        auto a = table_.find_leaf(keep);
        auto b = table_.find_leaf(other);
        if (a && b) {
            // Two leaf tables: lock in pfn order so two merges cannot deadlock.
            PtLock* first = &pt_lock(std::min(a->table, b->table));
            PtLock* second = a->table == b->table ? nullptr : &pt_lock(std::max(a->table, b->table));
            first->lock();
            if (second) second->lock();
            count(Count::PtLocks, second ? 2 : 1);
            auto ea = at(a->entry);
            auto eb = at(b->entry);
            const std::uint64_t pa = ea.load(std::memory_order_acquire);
            const std::uint64_t pb = eb.load(std::memory_order_acquire);
            if (Pte::present(pa) && Pte::present(pb) && Pte::pfn(pa) != Pte::pfn(pb) &&
                std::memcmp(data_.bytes(Pte::pfn(pa)).data(), data_.bytes(Pte::pfn(pb)).data(), kPage) == 0) {
                const Pfn shared = Pte::pfn(pa);
                map_count_[shared].fetch_add(1, std::memory_order_acq_rel);
                ea.store(Pte::with_writable(pa, false) | kMergedBit, std::memory_order_release);
                eb.store(Pte::with_pfn(Pte::with_writable(pb, false), shared) | kMergedBit,
                         std::memory_order_release);
                dropped = Pte::pfn(pb);
            }
            if (second) second->unlock();
            first->unlock();
        }
    }
    sched::point(sched::Point::HostPtesChanged);
    inv_other->end();
    inv_keep->end();
    if (dropped) {
        put_frame(*dropped);
        count(Count::Merged);
    }
    return dropped.has_value();
}

bool HostAddressSpace::swap_out(std::uint64_t address) {
    address &= ~(kPage - 1);
    const auto old = change_page(address, InvalidateEvent::SwapOut, [&](auto entry, std::uint64_t pte) {
        const Pfn from = Pte::pfn(pte);
        std::vector<std::uint8_t> saved(kPage);
        std::memcpy(saved.data(), data_.bytes(from).data(), kPage);
        std::uint64_t slot_id;
        {
            std::lock_guard swap(swap_mutex_);
            slot_id = next_swap_slot_++;
            swap_.emplace(slot_id, std::move(saved));
        }
        entry.store((slot_id << 12) | kSwapBit, std::memory_order_release);
        return std::optional<Pfn>(from);
    });
    if (old) {
        put_frame(*old);
        count(Count::SwappedOut);
    }
    return old.has_value();
}

bool HostAddressSpace::age(HostRange range) {
    bool young = chain_.clear_young(range);
    for_each_locked_pte(range, [&](std::uint64_t, std::atomic_ref<std::uint64_t> entry) {
        const std::uint64_t pte = entry.load(std::memory_order_acquire);
        if (Pte::present(pte) && Pte::accessed(pte)) {
            entry.store(Pte::with_accessed(pte, false), std::memory_order_release);
            young = true;
            count(Count::Aged);
        }
    });
    return young;
}

} // namespace hv::mmu
