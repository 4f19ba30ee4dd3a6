// The shadow MMU's fault path: fault() -> handle_fault() -> find_memslot(),
// the rule's resolve() (the host lookup), install() -> leaf_for(),
// the rule's stale(), publish(); and the vCPUs' table walks, which join a
// leaf table's shootdown targets.
#include "mmu/base/defects.hpp"
#include "mmu/base/units.hpp"
#include "mmu/secondary/policy_lock.hpp"
#include "mmu/secondary/shadow_mmu.hpp"
#include "mmu/sync/sched_point.hpp"

namespace hv::mmu {

// The steps of a fault, each a function of its own for reading and forced
// inline into fault() so that the split costs no calls (GCC inlines them
// only when their definitions come first: read this part bottom-up,
// fault() last).

[[gnu::always_inline]] inline void ShadowMmu::publish(ShadowFault& f, const RadixTable<Pte>::Slot& leaf, std::uint64_t fresh,
                        const PolicyLock& lock) {
    ShadowCounters& c = f.counters;
    const Pfn pfn = Pte::pfn(fresh);
    const bool writable = Pte::writable(fresh);
    const Rmap::Writers rmap_writers = lock.rmap_writers();
    // A frame's rmap head with other writers possible: one compare-exchange
    // (or its bit lock), counted as a lock, and a shared RMW unless the line
    // is ours. Excluded: a plain store.
    const auto rmap_cost = [&](Pfn frame) {
        if (rmap_writers == Rmap::Writers::Excluded) return;
        ++c.lock_acquisitions;
        if (!line_private(frame, f.vcpu)) ++c.shared_atomics;
    };
    auto entry = at(leaf.entry);
    std::uint64_t old = entry.load(std::memory_order_acquire);
    const std::uint64_t gfn = f.ga >> 12;
    for (;;) {
        if (Pte::present(old) && Pte::pfn(old) == pfn && (Pte::writable(old) || !writable)) {
            // Already there, yet the CPU faulted: its TLB was stale, or the
            // guest scribbled on the mirror it walks. Publish the path again
            // so a scribbled mirror cannot fault the same access forever.
            if (frames().mirrored()) table_.mirror_path(f.ga);
            return;
        }
        if (lock.sole_installer())
            entry.store(fresh, std::memory_order_release);
        else if (!entry.compare_exchange_weak(old, fresh, std::memory_order_acq_rel, std::memory_order_acquire))
            continue;
        frames().mirror(leaf.entry);
        sched::point(sched::Point::InstallPublished); // the entry, then its rmap link
        if (Pte::present(old) && Pte::pfn(old) != pfn) {
            rmap_.remove(Pte::pfn(old), gfn, rmap_writers);
            rmap_.add(pfn, gfn, rmap_writers);
            rmap_cost(Pte::pfn(old));
            rmap_cost(pfn);
        } else if (!Pte::present(old)) {
            rmap_.add(pfn, gfn, rmap_writers);
            rmap_cost(pfn);
        }
        ++c.installs;
        return;
    }
}

[[gnu::always_inline]] inline std::optional<RadixTable<ShadowMmu::Pte>::Slot> ShadowMmu::leaf_for(ShadowFault& f) {
    PaddedCounters& pc = counters_[f.vcpu];
    if (const auto t = pc.leaf.table_for(f.ga)) return table_.leaf_slot(*t, f.ga);
    // New tables come from the vCPU's frame cache; linking one writes the
    // parent table's line, which neighbouring tables share (counted).
    const auto walk = table_.walk_or_create(f.ga, f.vcpu);
    f.counters.add(walk.cost);
    if (!walk.found()) return std::nullopt;
    pc.leaf.remember(f.ga, walk.slot.table);
    return walk.slot;
}

template <CoherenceRule Rule>
[[gnu::always_inline]] inline FaultResult ShadowMmu::install(ShadowFault& f) {
    const auto leaf = leaf_for(f);
    if (!leaf) return FaultResult::OutOfFrames;
    PolicyLock lock(*this, leaf->table, f.counters, PolicyLock::Mode::Fault, f.vcpu);
    if (Rule::stale(coherence_, f)) return FaultResult::Retry;
    const bool writable = f.host.writable && f.slot.writable;
    if (f.access == Access::Write && !writable) return FaultResult::Refused;
    Perms perms{};
    perms.read = true;
    perms.write = writable;
    perms.exec = true;
    perms.user = true;
    // The fault is an access: the entry starts young, as the CPU would mark it.
    std::uint64_t fresh = Pte::with_accessed(Pte::make_leaf(f.host.pfn, perms), true);
    if (config_.cpu_walks && writable) fresh = Pte::with_dirty(fresh, true);
    // Join the table's shootdown targets before publishing: a zap of the
    // entry takes the policy lock we hold after we drop it, so it sees the
    // entry and the bit alike.
    if (mask_for_table(leaf->table, f.vcpu).set(f.vcpu)) ++f.counters.shared_atomics;
    sched::point(sched::Point::InstallRegistered); // in the mask, then the entry
    publish(f, *leaf, fresh, lock);
    return FaultResult::Installed;
}

[[gnu::always_inline]] inline std::optional<FaultResult> ShadowMmu::find_memslot(ShadowFault& f) {
    ReaderSlotLock::SharedGuard lock(slots_lock_, f.vcpu);
    const Memslot* s = memslots_.find_guest(f.ga);
    if (!s) return FaultResult::NoMemslot;
    f.slot = *s;
    f.ha = s->host_start + (f.ga - s->guest_start);
    return std::nullopt;
}

template <CoherenceRule Rule>
[[gnu::always_inline]] inline FaultResult ShadowMmu::handle_fault(ShadowFault& f) {
    // Snapshots before the memslot lookup and the host lookup: a memslot
    // removal or an invalidation that completes between them and the
    // install changes one of them, and the install is refused.
    f.snapshot = coherence_.snapshot();
    sched::point(sched::Point::FaultSequenceRead); // snapshots, then the lookups they guard
    if (auto end = find_memslot(f)) return *end;
    sched::point(sched::Point::FaultSnapshot);
    if (f.access == Access::Write && !f.slot.writable) return FaultResult::Refused;
    if (auto end = Rule::resolve(coherence_, f)) return *end;
    if (after_host_lookup) after_host_lookup(f.vcpu, f.ga);
    sched::point(sched::Point::FaultInstall); // under ptlock, holding the host PT lock (f.host_pte)
    if (defect::kFaultSnapshotLate) f.snapshot.seq = coherence_.snapshot().seq;
    return install<Rule>(f);
}

FaultResult ShadowMmu::fault(std::uint32_t vcpu, std::uint64_t guest_address, Access access) {
    ShadowCounters& c = counters_[vcpu].c;
    ++c.faults;
    ShadowFault f{vcpu, guest_address & ~(kPage - 1), access, c};
    switch (config_.coherence) {
    case CoherencePolicy::Seq: return c.count(handle_fault<SeqCoherence>(f));
    case CoherencePolicy::PtLock: return c.count(handle_fault<PtLockCoherence>(f));
    case CoherencePolicy::RangeActive: return c.count(handle_fault<RangeActiveCoherence>(f));
    }
    return c.count(FaultResult::Refused);
}

// Counted in `vcpu`'s counters: a new slab (a heap allocation: 2 shared
// RMWs, the allocator's lock, counted conservatively) and the
// compare-exchange publishing the mask (shared unless the pointer's line is
// the vCPU's own). A mask lost to a racer stays unused in its slab.
VcpuMask& ShadowMmu::mask_for_table(Pfn table, std::uint32_t vcpu) {
    VcpuMask* m = table_masks_[table].load(std::memory_order_acquire);
    if (m) return *m;
    PaddedCounters& slot = counters_[vcpu];
    if (slot.slab_used == kMaskSlab) {
        slot.slabs.push_back(std::make_unique<PaddedMask[]>(kMaskSlab));
        slot.slab_used = 0;
        slot.c.shared_atomics += 2;
    }
    VcpuMask* fresh = &slot.slabs.back()[slot.slab_used].mask;
    if (!line_private(table, vcpu)) ++slot.c.shared_atomics;
    if (table_masks_[table].compare_exchange_strong(m, fresh, std::memory_order_acq_rel)) {
        ++slot.slab_used;
        return *fresh;
    }
    return *m;
}

std::uint64_t ShadowMmu::walk(std::uint32_t vcpu, std::uint64_t guest_address) {
    auto leaf = table_.find_leaf(guest_address);
    if (!leaf) return 0;
    // Register before reading, both sequentially consistent: a zap clears
    // the entry, then fences (sequentially consistent), then reads the
    // mask, so either it sees our bit or we read the cleared entry.
    const auto join = [&] {
        if (mask_for_table(leaf->table, vcpu).set(vcpu)) {
            ShadowCounters& c = counters_[vcpu].c;
            ++c.walk_registrations;
            ++c.shared_atomics;
        }
    };
    const auto read = [&] { return at(leaf->entry).load(std::memory_order_seq_cst); };
    std::uint64_t e = 0;
    if (defect::kWalkReadsBeforeJoining)
        e = read();
    else
        join();
    sched::point(sched::Point::WalkRegistered); // between the two, in either order
    if (defect::kWalkReadsBeforeJoining)
        join();
    else
        e = read();
    return Pte::present(e) ? e : 0;
}

void ShadowMmu::leave_table(std::uint32_t vcpu, std::uint64_t guest_address) {
    const auto leaf = table_.find_leaf(guest_address);
    if (!leaf) return;
    VcpuMask* m = table_masks_[leaf->table].load(std::memory_order_acquire);
    if (m && m->reset(vcpu)) {
        ShadowCounters& c = counters_[vcpu].c;
        ++c.mask_departures;
        ++c.shared_atomics;
    }
}

} // namespace hv::mmu
