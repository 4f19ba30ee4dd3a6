#include "host_address_space.hpp"

#include "hex.hpp"
#include "sched_point.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace hv::mmu {
namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kTableSpan = 512 * kPage; // what one leaf table maps
constexpr std::uint64_t kAddressLimit = 1ull << 47;

std::atomic_ref<std::uint64_t> at(std::uint64_t* e) { return std::atomic_ref<std::uint64_t>(*e); }


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

const char* to_string(HostFaultStatus s) {
    switch (s) {
    case HostFaultStatus::Mapped: return "mapped";
    case HostFaultStatus::NoMapping: return "no-mapping";
    case HostFaultStatus::ReadOnly: return "read-only";
    case HostFaultStatus::OutOfFrames: return "out-of-frames";
    }
    return "?";
}

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

HostAddressSpace::HostAddressSpace(FrameSpace& frames, bool page_at_a_time)
    : frames_(frames), page_at_a_time_(page_at_a_time),
      table_([&] {
          auto t = RadixTable<Pte>::create(frames);
          if (!t) throw std::runtime_error("HostAddressSpace: no frame left for the root page table");
          return std::move(*t);
      }()),
      pt_locks_(frames.frame_count()), map_count_(frames.frame_count()),
      slots_(std::make_unique<CounterSlot[]>(kMaxVcpus + 1)) {}

HostCounters HostAddressSpace::counters() const {
    std::uint64_t sum[static_cast<std::size_t>(Count::N)] = {};
    for (std::uint32_t c = 0; c <= kMaxVcpus; ++c)
        for (std::size_t i = 0; i < static_cast<std::size_t>(Count::N); ++i)
            sum[i] += slots_[c].v[i].load(std::memory_order_relaxed);
    auto get = [&](Count which) { return sum[static_cast<std::size_t>(which)]; };
    HostCounters h;
    h.faults = get(Count::Faults);
    h.zero_fills = get(Count::ZeroFills);
    h.swap_ins = get(Count::SwapIns);
    h.cow_breaks = get(Count::CowBreaks);
    h.unmapped = get(Count::Unmapped);
    h.protected_pages = get(Count::Protected);
    h.migrated = get(Count::Migrated);
    h.merged = get(Count::Merged);
    h.swapped_out = get(Count::SwappedOut);
    h.aged = get(Count::Aged);
    h.pt_lock_acquisitions = get(Count::PtLocks);
    return h;
}

HostAddressSpace::~HostAddressSpace() {
    if (!chain_.released()) chain_.release();
    // Drop every mapping so the frame space balances after we are gone.
    std::vector<Pfn> to_free;
    table_.for_each_leaf_table(0, kAddressLimit, [&](Pfn pfn, std::uint64_t) {
        std::uint64_t* entries = frames_.entries(pfn);
        for (unsigned i = 0; i < 512; ++i) {
            const std::uint64_t pte = at(&entries[i]).load();
            if (Pte::present(pte)) to_free.push_back(Pte::pfn(pte));
            entries[i] = 0;
        }
    });
    for (Pfn pfn : to_free) put_frame(pfn);
}

const HostAddressSpace::Region* HostAddressSpace::region_for(std::uint64_t address) const {
    auto it = regions_.upper_bound(address);
    if (it == regions_.begin()) return nullptr;
    --it;
    return address < it->second.end ? &it->second : nullptr;
}

void HostAddressSpace::map_anonymous(HostRange range, bool writable) {
    if (range.start >= range.end || (range.start | range.end) % kPage || range.end > kAddressLimit)
        throw std::invalid_argument("map_anonymous: expected a non-empty 4 KiB-aligned range below 2^47, got [" +
                                    hex(range.start) + ", " + hex(range.end) + ")");
    std::unique_lock lock(regions_lock_);
    auto next = regions_.lower_bound(range.start);
    if (next != regions_.end() && next->first < range.end)
        throw std::invalid_argument("map_anonymous: [" + hex(range.start) + ", " + hex(range.end) +
                                    ") overlaps the mapping at " + hex(next->first));
    if (next != regions_.begin() && std::prev(next)->second.end > range.start)
        throw std::invalid_argument("map_anonymous: [" + hex(range.start) + ", " + hex(range.end) +
                                    ") overlaps the mapping at " + hex(std::prev(next)->first));
    regions_.emplace(range.start, Region{range.end, writable});
}

std::optional<Pfn> HostAddressSpace::new_frame(std::uint32_t cpu, AllocCost* cost) {
    AllocCost ignored;
    auto pfn = frames_.allocate(cpu, cost ? *cost : ignored);
    if (pfn) map_count_[*pfn].store(1, std::memory_order_relaxed);
    return pfn;
}

void HostAddressSpace::put_frame(Pfn pfn) {
    if (map_count_[pfn].fetch_sub(1, std::memory_order_acq_rel) == 1) frames_.free(pfn);
}

HostAddressSpace::PteGuard HostAddressSpace::lock_pte(std::uint64_t address, std::uint32_t cpu) {
    auto slot = table_.find_leaf(address);
    if (!slot) return {};
    PtLock& l = pt_lock(slot->table);
    l.lock();
    count(Count::PtLocks, 1, cpu);
    return PteGuard(&l, slot->entry, pt_lock_rmws(slot->table, cpu));
}

std::optional<HostTranslation> HostAddressSpace::lookup(std::uint64_t address) const {
    auto slot = table_.find_leaf(address);
    if (!slot) return std::nullopt;
    const std::uint64_t pte = at(slot->entry).load(std::memory_order_acquire);
    if (!Pte::present(pte)) return std::nullopt;
    return HostTranslation{Pte::pfn(pte), Pte::writable(pte)};
}

bool HostAddressSpace::swapped_out(std::uint64_t address) const {
    auto slot = table_.find_leaf(address);
    return slot && is_swap_entry(at(slot->entry).load(std::memory_order_acquire));
}

// The fault on a page whose leaf table exists: under its PT lock, a present
// PTE answers by itself (protect() changes present PTEs under that lock).
// nullopt (lock released) when the PTE is not present. The PT lock is the
// caller's to count; the result carries what else was taken.
std::optional<HostFaultResult> HostAddressSpace::fault_present(std::uint64_t* slot_entry, Pfn table,
                                                               std::uint64_t address, Access access, std::uint32_t cpu) {
    PtLock& lock = pt_lock(table);
    lock.lock();
    count(Count::PtLocks, 1, cpu);
    auto entry = at(slot_entry);
    const std::uint64_t pte = entry.load(std::memory_order_acquire);
    if (!Pte::present(pte)) {
        lock.unlock();
        return std::nullopt;
    }
    if (access == Access::Write && !Pte::writable(pte)) {
        lock.unlock();
        if (!(pte & kMergedBit)) return HostFaultResult{HostFaultStatus::ReadOnly, {}}; // protect() made it read-only
        // Copy-on-write, unless protect() made the range read-only.
        const std::uint32_t region_rmws = cpu < kMaxVcpus ? 0 : 2; // a CPU's own reader slot is private
        {
            ReaderSlotLock::SharedGuard regions(regions_lock_, cpu);
            const Region* r = region_for(address);
            if (!r || !r->writable) return HostFaultResult{HostFaultStatus::ReadOnly, {}, 1, region_rmws};
        }
        HostFaultResult r = break_cow(address, cpu);
        r.locks += 1;
        r.shared_atomics += region_rmws;
        return r;
    }
    std::uint64_t updated = Pte::with_accessed(pte, true);
    if (access == Access::Write) updated = Pte::with_dirty(updated, true);
    if (updated != pte) entry.store(updated, std::memory_order_release);
    lock.unlock();
    return HostFaultResult{HostFaultStatus::Mapped, {Pte::pfn(pte), Pte::writable(pte)}};
}

HostFaultResult HostAddressSpace::fault(std::uint64_t address, Access access, std::uint32_t cpu) {
    count(Count::Faults, 1, cpu);
    address &= ~(kPage - 1);
    if (address >= kAddressLimit) return {HostFaultStatus::NoMapping, {}};
    std::uint32_t locks = 0, shared = 0; // what this fault cost so far
    const auto costed = [&](HostFaultResult r) {
        r.locks += locks;
        r.shared_atomics += shared;
        return r;
    };
    for (;;) {
        if (auto slot = find_leaf(address, cpu)) {
            // A present PTE that allows the access and already has its
            // accessed (and for a write, dirty) bit answers without the PT
            // lock, as Linux's get_user_pages_fast does: the lock would be
            // released before the caller uses the answer anyway, so a host
            // operation changing the PTE after this load is the caller's to
            // catch (its invalidation comes after this load: the secondary
            // MMU's coherence check sees it). Anything else takes the lock.
            const std::uint64_t pte = at(slot->entry).load(std::memory_order_acquire);
            if (Pte::present(pte) && Pte::accessed(pte) &&
                (access == Access::Read || (Pte::writable(pte) && Pte::dirty(pte))))
                return costed({HostFaultStatus::Mapped, {Pte::pfn(pte), Pte::writable(pte)}});
            ++locks;
            shared += pt_lock_rmws(slot->table, cpu);
            if (auto r = fault_present(slot->entry, slot->table, address, access, cpu)) return costed(*r);
        }
        // The page must be made present: consult the region map, under its
        // reader lock (our own slot's line, or the shared slot's for kAnyCpu).
        bool region_writable;
        {
            ReaderSlotLock::SharedGuard regions(regions_lock_, cpu);
            ++locks;
            if (cpu >= kMaxVcpus) shared += 2;
            const Region* r = region_for(address);
            if (!r) return costed({HostFaultStatus::NoMapping, {}});
            region_writable = r->writable;
        }
        if (access == Access::Write && !region_writable) return costed({HostFaultStatus::ReadOnly, {}});
        const auto walk = table_.walk_or_create(address, cpu);
        locks += walk.locks;
        shared += walk.shared_rmws;
        if (!walk.found()) return costed({HostFaultStatus::OutOfFrames, {}});
        const auto& slot = walk.slot;
        if (cpu < kMaxVcpus) slots_[cpu].leaf.remember(address, slot.table);
        PtLock& lock = pt_lock(slot.table);
        lock.lock();
        ++locks;
        shared += pt_lock_rmws(slot.table, cpu);
        count(Count::PtLocks, 1, cpu);
        auto entry = at(slot.entry);
        const std::uint64_t pte = entry.load(std::memory_order_acquire);
        if (Pte::present(pte)) {
            lock.unlock();
            continue; // another fault made it present since we looked: answer from it
        }
        AllocCost alloc;
        auto pfn = new_frame(cpu, &alloc); // zeroed by the frame space
        locks += alloc.locks;
        shared += alloc.shared_rmws;
        if (!pfn) {
            lock.unlock();
            return costed({HostFaultStatus::OutOfFrames, {}});
        }
        if (is_swap_entry(pte)) {
            const std::uint64_t slot_id = pte >> 12;
            std::lock_guard swap(swap_mutex_);
            ++locks;
            shared += 2;
            auto it = swap_.find(slot_id);
            if (it != swap_.end()) {
                std::memcpy(frames_.bytes(*pfn).data(), it->second.data(), kPage);
                swap_.erase(it);
            }
            count(Count::SwapIns, 1, cpu);
        } else {
            count(Count::ZeroFills, 1, cpu);
        }
        Perms perms{};
        perms.read = true;
        perms.write = region_writable;
        perms.user = true;
        std::uint64_t fresh = Pte::with_accessed(Pte::make_leaf(*pfn, perms), true);
        if (access == Access::Write) fresh = Pte::with_dirty(fresh, true);
        entry.store(fresh, std::memory_order_release);
        lock.unlock();
        return costed({HostFaultStatus::Mapped, {*pfn, region_writable}});
    }
}

// Costs: the notifier chain's reader count (2 shared RMWs), the allocator
// (its cache lock, and the allocator lock on a refill), the PT lock; a
// dropped frame's free takes the allocator lock (2 shared RMWs).
HostFaultResult HostAddressSpace::break_cow(std::uint64_t address, std::uint32_t cpu) {
    const HostRange page{address, address + kPage};
    auto inv = chain_.begin(page, InvalidateEvent::Clear, true); // blockable: always begins
    sched::point(sched::Point::InvalidateStarted);
    HostFaultResult cost{HostFaultStatus::Mapped, {}, 0, 2};
    const auto costed = [&](HostFaultStatus status, HostTranslation t) {
        cost.status = status;
        cost.translation = t;
        return cost;
    };
    auto slot = table_.find_leaf(address);
    if (!slot) return costed(HostFaultStatus::NoMapping, {});
    AllocCost alloc;
    auto fresh = new_frame(cpu, &alloc);
    cost.locks += alloc.locks;
    cost.shared_atomics += alloc.shared_rmws;
    if (!fresh) return costed(HostFaultStatus::OutOfFrames, {});
    PtLock& lock = pt_lock(slot->table);
    std::lock_guard guard(lock);
    cost.locks += 1;
    cost.shared_atomics += pt_lock_rmws(slot->table, cpu);
    count(Count::PtLocks, 1, cpu);
    auto entry = at(slot->entry);
    const std::uint64_t pte = entry.load(std::memory_order_acquire);
    if (!Pte::present(pte) || !(pte & kMergedBit)) {
        // Someone else changed it meanwhile (unmap, another breaker): retry from the top.
        put_frame(*fresh);
        cost.locks += 1;
        cost.shared_atomics += 2;
        return costed(HostFaultStatus::Mapped, {Pte::pfn(pte), Pte::writable(pte)});
    }
    const Pfn old = Pte::pfn(pte);
    std::memcpy(frames_.bytes(*fresh).data(), frames_.bytes(old).data(), kPage);
    std::uint64_t updated = Pte::with_dirty(Pte::with_accessed(Pte::with_writable(pte & ~kMergedBit, true), true), true);
    updated = Pte::with_pfn(updated, *fresh);
    entry.store(updated, std::memory_order_release);
    // The merged frame keeps at least one other mapping: a count decrement
    // (its line is shared by the mappers), no free.
    put_frame(old);
    cost.shared_atomics += 1;
    count(Count::CowBreaks, 1, cpu);
    return costed(HostFaultStatus::Mapped, {*fresh, true});
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
// `change` rewrite a present, unshared PTE under its PT lock. `change`
// returns the frame that stops being mapped there, or nullopt to leave it.
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
                old = change(entry, pte);
                if (old && page_at_a_time_) fire_page(address, event);
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
        std::memcpy(frames_.bytes(*fresh).data(), frames_.bytes(from).data(), kPage);
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
                std::memcmp(frames_.bytes(Pte::pfn(pa)).data(), frames_.bytes(Pte::pfn(pb)).data(), kPage) == 0) {
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
        std::memcpy(saved.data(), frames_.bytes(from).data(), kPage);
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

std::size_t HostAddressSpace::swap_slots_in_use() const {
    std::lock_guard swap(swap_mutex_);
    return swap_.size();
}

} // namespace hv::mmu
