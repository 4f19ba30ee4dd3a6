#include "mmu/host/host_address_space.hpp"

#include "mmu/base/units.hpp"
#include "mmu/sync/sched_point.hpp"

#include <algorithm>
#include <cstring>
#include <stdexcept>
#include <string>

namespace hv::mmu {
namespace {
constexpr std::uint64_t kAddressLimit = 1ull << 47;

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

HostAddressSpace::HostAddressSpace(FrameSpace& frames, bool page_at_a_time)
    : HostAddressSpace(frames, frames, page_at_a_time) {}

namespace {
FrameSpace& checked_data_space(FrameSpace& tables, FrameSpace& data) {
    if (&tables == &data) return data;
    if (!tables.same_memory(data))
        throw std::invalid_argument("HostAddressSpace: expected the table and data frame spaces over the same memory");
    if (tables.first_allocatable() < data.end_allocatable() && data.first_allocatable() < tables.end_allocatable())
        throw std::invalid_argument("HostAddressSpace: table frames [" + hex(tables.first_allocatable()) + ", " +
                                    hex(tables.end_allocatable()) + ") overlap data frames [" +
                                    hex(data.first_allocatable()) + ", " + hex(data.end_allocatable()) + ")");
    return data;
}
} // namespace

HostAddressSpace::HostAddressSpace(FrameSpace& tables, FrameSpace& data, bool page_at_a_time)
    : frames_(tables), data_(checked_data_space(tables, data)), page_at_a_time_(page_at_a_time),
      table_([&] {
          auto t = RadixTable<Pte>::create(tables);
          if (!t) throw std::runtime_error("HostAddressSpace: no frame left for the root page table");
          return std::move(*t);
      }()),
      pt_locks_(tables.frame_count()), map_count_(tables.frame_count()),
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

std::optional<Pfn> HostAddressSpace::new_frame(std::uint32_t cpu, Cost* cost) {
    Cost ignored;
    auto pfn = data_.allocate(cpu, cost ? *cost : ignored);
    if (pfn) map_count_[*pfn].store(1, std::memory_order_relaxed);
    return pfn;
}

void HostAddressSpace::put_frame(Pfn pfn) {
    if (map_count_[pfn].fetch_sub(1, std::memory_order_acq_rel) == 1) data_.free(pfn);
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
        if (!(pte & kMergedBit)) return HostFaultResult{HostFaultStatus::ReadOnly, {}, {}}; // protect() made it read-only
        // Copy-on-write, unless protect() made the range read-only.
        const std::uint32_t region_rmws = cpu < kMaxVcpus ? 0 : 2; // a CPU's own reader slot is private
        {
            ReaderSlotLock::SharedGuard regions(regions_lock_, cpu);
            const Region* r = region_for(address);
            if (!r || !r->writable) return HostFaultResult{HostFaultStatus::ReadOnly, {}, {1, region_rmws}};
        }
        HostFaultResult r = break_cow(address, cpu);
        r.cost += Cost{1, region_rmws};
        return r;
    }
    std::uint64_t updated = Pte::with_accessed(pte, true);
    if (access == Access::Write) updated = Pte::with_dirty(updated, true);
    if (updated != pte) entry.store(updated, std::memory_order_release);
    lock.unlock();
    return HostFaultResult{HostFaultStatus::Mapped, {Pte::pfn(pte), Pte::writable(pte)}, {}};
}

HostFaultResult HostAddressSpace::fault(std::uint64_t address, Access access, std::uint32_t cpu) {
    count(Count::Faults, 1, cpu);
    address &= ~(kPage - 1);
    if (address >= kAddressLimit) return {HostFaultStatus::NoMapping, {}, {}};
    Cost cost; // what this fault cost so far
    const auto costed = [&](HostFaultResult r) {
        r.cost += cost;
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
                return costed({HostFaultStatus::Mapped, {Pte::pfn(pte), Pte::writable(pte)}, {}});
            cost += Cost{1, pt_lock_rmws(slot->table, cpu)};
            if (auto r = fault_present(slot->entry, slot->table, address, access, cpu)) return costed(*r);
        }
        // The page must be made present: consult the region map, under its
        // reader lock (our own slot's line, or the shared slot's for kAnyCpu).
        bool region_writable;
        {
            ReaderSlotLock::SharedGuard regions(regions_lock_, cpu);
            cost += Cost{1, cpu >= kMaxVcpus ? 2u : 0u};
            const Region* r = region_for(address);
            if (!r) return costed({HostFaultStatus::NoMapping, {}, {}});
            region_writable = r->writable;
        }
        if (access == Access::Write && !region_writable) return costed({HostFaultStatus::ReadOnly, {}, {}});
        const auto walk = table_.walk_or_create(address, cpu);
        cost += walk.cost;
        if (!walk.found()) return costed({HostFaultStatus::OutOfFrames, {}, {}});
        const auto& slot = walk.slot;
        if (cpu < kMaxVcpus) slots_[cpu].leaf.remember(address, slot.table);
        PtLock& lock = pt_lock(slot.table);
        lock.lock();
        cost += Cost{1, pt_lock_rmws(slot.table, cpu)};
        count(Count::PtLocks, 1, cpu);
        auto entry = at(slot.entry);
        const std::uint64_t pte = entry.load(std::memory_order_acquire);
        if (Pte::present(pte)) {
            lock.unlock();
            continue; // another fault made it present since we looked: answer from it
        }
        Cost alloc;
        auto pfn = new_frame(cpu, &alloc); // zeroed by the frame space
        cost += alloc;
        if (!pfn) {
            lock.unlock();
            return costed({HostFaultStatus::OutOfFrames, {}, {}});
        }
        if (is_swap_entry(pte)) {
            const std::uint64_t slot_id = pte >> 12;
            std::lock_guard swap(swap_mutex_);
            cost += Cost{1, 2};
            auto it = swap_.find(slot_id);
            if (it != swap_.end()) {
                std::memcpy(data_.bytes(*pfn).data(), it->second.data(), kPage);
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
        return costed({HostFaultStatus::Mapped, {*pfn, region_writable}, {}});
    }
}

// Costs: the notifier chain's reader count (2 shared RMWs), the allocator
// (its cache lock, and the allocator lock on a refill), the PT lock; a
// dropped frame's free takes the allocator lock (2 shared RMWs).
HostFaultResult HostAddressSpace::break_cow(std::uint64_t address, std::uint32_t cpu) {
    const HostRange page{address, address + kPage};
    auto inv = chain_.begin(page, InvalidateEvent::Clear, true); // blockable: always begins
    sched::point(sched::Point::InvalidateStarted);
    Cost cost{0, 2}; // what the break cost so far
    const auto costed = [&](HostFaultStatus status, HostTranslation t) { return HostFaultResult{status, t, cost}; };
    auto slot = table_.find_leaf(address);
    if (!slot) return costed(HostFaultStatus::NoMapping, {});
    Cost alloc;
    auto fresh = new_frame(cpu, &alloc);
    cost += alloc;
    if (!fresh) return costed(HostFaultStatus::OutOfFrames, {});
    PtLock& lock = pt_lock(slot->table);
    std::lock_guard guard(lock);
    cost += Cost{1, pt_lock_rmws(slot->table, cpu)};
    count(Count::PtLocks, 1, cpu);
    auto entry = at(slot->entry);
    const std::uint64_t pte = entry.load(std::memory_order_acquire);
    if (!Pte::present(pte) || !(pte & kMergedBit)) {
        // Someone else changed it meanwhile (unmap, another breaker): retry from the top.
        put_frame(*fresh);
        cost += Cost{1, 2};
        return costed(HostFaultStatus::Mapped, {Pte::pfn(pte), Pte::writable(pte)});
    }
    const Pfn old = Pte::pfn(pte);
    std::memcpy(data_.bytes(*fresh).data(), data_.bytes(old).data(), kPage);
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

std::size_t HostAddressSpace::swap_slots_in_use() const {
    std::lock_guard swap(swap_mutex_);
    return swap_.size();
}

} // namespace hv::mmu
