// The shadow MMU: construction, memslots, faults and walks. Zaps, the
// notifier callbacks and audit() are in shadow_invalidate.cpp.
#include "mmu/secondary/shadow_mmu.hpp"
#include "mmu/base/defects.hpp"

#include "mmu/base/units.hpp"
#include "mmu/secondary/policy_lock.hpp"
#include "mmu/sync/sched_point.hpp"

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

namespace hv::mmu {
using shadow_detail::at;
using shadow_detail::kPage;

const char* to_string(LockPolicy p) {
    switch (p) {
    case LockPolicy::Global: return "global";
    case LockPolicy::Rw: return "rw";
    case LockPolicy::Split: return "split";
    }
    return "?";
}
const char* to_string(CoherencePolicy p) {
    switch (p) {
    case CoherencePolicy::Seq: return "seq";
    case CoherencePolicy::PtLock: return "ptlock";
    case CoherencePolicy::RangeActive: return "range-active";
    }
    return "?";
}
std::optional<LockPolicy> lock_policy_named(std::string_view name) {
    for (const LockPolicy p : {LockPolicy::Global, LockPolicy::Rw, LockPolicy::Split})
        if (name == to_string(p)) return p;
    return std::nullopt;
}
std::optional<CoherencePolicy> coherence_policy_named(std::string_view name) {
    for (const CoherencePolicy p : {CoherencePolicy::Seq, CoherencePolicy::PtLock, CoherencePolicy::RangeActive})
        if (name == to_string(p)) return p;
    return std::nullopt;
}
const char* to_string(FaultResult r) {
    switch (r) {
    case FaultResult::Installed: return "installed";
    case FaultResult::Retry: return "retry";
    case FaultResult::NoMemslot: return "no-memslot";
    case FaultResult::Refused: return "refused";
    case FaultResult::OutOfFrames: return "out-of-frames";
    }
    return "?";
}

ShadowCounters& ShadowCounters::operator+=(const ShadowCounters& o) {
    faults += o.faults; installs += o.installs; retries += o.retries; no_memslot += o.no_memslot;
    refused += o.refused; out_of_frames += o.out_of_frames; lock_acquisitions += o.lock_acquisitions;
    shared_atomics += o.shared_atomics; host_lock_acquisitions += o.host_lock_acquisitions;
    host_shared_atomics += o.host_shared_atomics; zaps += o.zaps; batches += o.batches; shootdowns += o.shootdowns;
    shootdown_targets += o.shootdown_targets; walk_registrations += o.walk_registrations;
    resumed_batches += o.resumed_batches;
    mask_departures += o.mask_departures; max_batch = std::max(max_batch, o.max_batch);
    return *this;
}

ShadowCounters ShadowCounters::since(const ShadowCounters& b) const {
    ShadowCounters d = *this;
    d.faults -= b.faults; d.installs -= b.installs; d.retries -= b.retries; d.no_memslot -= b.no_memslot;
    d.refused -= b.refused; d.out_of_frames -= b.out_of_frames; d.lock_acquisitions -= b.lock_acquisitions;
    d.shared_atomics -= b.shared_atomics; d.host_lock_acquisitions -= b.host_lock_acquisitions;
    d.host_shared_atomics -= b.host_shared_atomics; d.zaps -= b.zaps; d.batches -= b.batches;
    d.shootdowns -= b.shootdowns; d.shootdown_targets -= b.shootdown_targets; d.resumed_batches -= b.resumed_batches;
    d.walk_registrations -= b.walk_registrations; d.mask_departures -= b.mask_departures;
    return d;
}

namespace {
ShadowConfig validated(ShadowConfig config) {
    if (config.vcpus == 0 || config.vcpus > kMaxVcpus)
        throw std::invalid_argument("ShadowMmu: vcpus must be 1.." + std::to_string(kMaxVcpus) + ", got " +
                                    std::to_string(config.vcpus));
    return config;
}
} // namespace

ShadowMmu::ShadowMmu(HostAddressSpace& host, ShadowConfig config, TlbShootdown* shootdown)
    : host_(host), config_(validated(config)), shootdown_(shootdown),
      table_([&] {
          auto t = RadixTable<Pte>::create(host.frames());
          if (!t) throw std::runtime_error("ShadowMmu: no frame left for the root table");
          return std::move(*t);
      }()),
      rmap_(host.frames().frame_count()), slots_lock_(config_.vcpus, ReaderSlotLock::Mode::RareWriters),
      rw_lock_(config_.vcpus),
      table_locks_(host.frames().frame_count()), table_masks_(host.frames().frame_count()),
      counters_(std::make_unique<PaddedCounters[]>(config_.vcpus + 1)) {
    host_.notifiers().subscribe(*this);
    subscribed_ = true;
}

ShadowMmu::~ShadowMmu() {
    if (subscribed_ && !host_.notifiers().released()) host_.notifiers().unsubscribe(*this);
    shootdown_ = nullptr; // its owner may be gone; nobody can use our entries any more
    const GuestRange everything{0, MemslotTable::kAddressLimit};
    zap_ranges(std::span(&everything, 1), zap_slot());
    // The masks go with the slabs in counters_.
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

// A new slot must not appear while an invalidation runs: its guest range
// is not in the hull the invalidation announced, so a fault through it
// could install a page the host is changing. Like KVM, wait until no
// invalidation is active (holding zap_mutex_, so none starts meanwhile).
void ShadowMmu::wait_no_invalidation() {
    while (invalidate_in_progress_.load(std::memory_order_seq_cst) != 0) {
        if (sched::controlled())
            sched::yield(sched::Point::InvalidationActive);
        else
            std::this_thread::yield();
    }
}

void ShadowMmu::refuse_static_overlap(std::uint64_t start, std::uint64_t end, const char* what) const {
    for (const StaticRange& r : statics_)
        if (start < r.end && r.start < end)
            throw MemslotError(std::string(what) + ": guest range [" + hex(start) + ", " + hex(end) +
                               ") overlaps the static range [" + hex(r.start) + ", " + hex(r.end) + ")");
}

void ShadowMmu::add_memslot(const Memslot& slot) {
    std::lock_guard zaps(zap_mutex_);
    wait_no_invalidation();
    std::unique_lock lock(slots_lock_);
    if (slot.size != 0 && slot.guest_start + slot.size > slot.guest_start)
        refuse_static_overlap(slot.guest_start, slot.guest_end(), "memslot");
    memslots_.add(slot);
}

void ShadowMmu::alias_memslot(std::uint32_t existing, std::uint32_t id, std::uint64_t guest_start) {
    std::lock_guard zaps(zap_mutex_);
    wait_no_invalidation();
    std::unique_lock lock(slots_lock_);
    for (const Memslot& s : memslots_.slots())
        if (s.id == existing && guest_start + s.size > guest_start)
            refuse_static_overlap(guest_start, guest_start + s.size, "memslot alias");
    memslots_.alias(existing, id, guest_start);
}

std::uint64_t ShadowMmu::static_entry(Pfn frame, bool writable) {
    Perms perms{};
    perms.read = true;
    perms.write = writable;
    perms.exec = true;
    perms.user = true;
    // Accessed, and dirty when writable: the CPU never writes these entries.
    return Pte::with_dirty(Pte::with_accessed(Pte::make_leaf(frame, perms), true), writable) | kStaticBit;
}

void ShadowMmu::map_static(std::uint64_t guest_start, std::uint64_t size, Pfn first_frame, bool writable) {
    if (size == 0 || (guest_start | size) % kPage || guest_start + size < guest_start ||
        guest_start + size > MemslotTable::kAddressLimit)
        throw MemslotError("static range: expected a non-empty 4 KiB-aligned range below 2^47, got [" +
                           hex(guest_start) + ", +" + hex(size) + ")");
    const std::uint64_t pages = size / kPage;
    const FrameSpace& fs = host_.frames();
    if (first_frame + pages < first_frame || first_frame + pages > fs.frame_count())
        throw MemslotError("static range: frames [" + hex(first_frame) + ", +" + hex(pages) +
                           ") lie outside the frame space of " + hex(fs.frame_count()) + " frames");
    // The allocators must never hand a static frame out as a table or a page.
    for (const FrameSpace* pool : {&fs, &std::as_const(host_).data_frames()})
        if (first_frame < pool->end_allocatable() && pool->first_allocatable() < first_frame + pages)
            throw MemslotError("static range: frames [" + hex(first_frame) + ", +" + hex(pages) +
                               ") overlap the allocatable frames [" + hex(pool->first_allocatable()) + ", " +
                               hex(pool->end_allocatable()) + ")");
    std::lock_guard zaps(zap_mutex_);
    std::unique_lock lock(slots_lock_);
    refuse_static_overlap(guest_start, guest_start + size, "static range");
    for (const Memslot& s : memslots_.slots())
        if (guest_start < s.guest_end() && s.guest_start < guest_start + size)
            throw MemslotError("static range [" + hex(guest_start) + ", " + hex(guest_start + size) +
                               ") overlaps memslot " + std::to_string(s.id));
    for (std::uint64_t i = 0; i < pages; ++i) {
        auto leaf = table_.ensure_leaf(guest_start + i * kPage);
        if (!leaf) {
            // Undo the part already mapped: the tables stay (they belong to
            // the table and are freed with it), the entries go.
            for (std::uint64_t j = 0; j < i; ++j)
                if (auto l = table_.find_leaf(guest_start + j * kPage)) {
                    at(l->entry).store(0, std::memory_order_release);
                    frames().mirror(l->entry);
                }
            throw MemslotError("static range: no frame left for a shadow table after " + std::to_string(i) +
                               " of " + std::to_string(pages) + " pages");
        }
        at(leaf->entry).store(static_entry(first_frame + i, writable), std::memory_order_release);
        frames().mirror(leaf->entry);
    }
    statics_.push_back({guest_start, guest_start + size, first_frame, writable});
}

void ShadowMmu::remove_memslot(std::uint32_t id) {
    // Like an invalidation: faults that looked the slot up before must retry.
    // Lock order everywhere: zap_mutex_, then slots_lock_, then the zap locks.
    std::lock_guard zaps(zap_mutex_);
    std::unique_lock lock(slots_lock_);
    const Memslot s = memslots_.remove(id); // throws for an unknown id, before anything changed
    slots_gen_.fetch_add(1);                // before the zap: see fault()
    sched::point(sched::Point::MemslotRetired);
    const GuestRange r{s.guest_start, s.guest_end()};
    invalidate_guest(std::span(&r, 1));
    end_invalidation();
}

std::vector<Memslot> ShadowMmu::memslots() const {
    ReaderSlotLock::SharedGuard lock(slots_lock_, slots_lock_.shared_slot());
    return memslots_.slots();
}

std::optional<std::uint64_t> ShadowMmu::guest_to_host(std::uint64_t guest_address) const {
    ReaderSlotLock::SharedGuard lock(slots_lock_, slots_lock_.shared_slot());
    return memslots_.guest_to_host(guest_address);
}

std::uint64_t ShadowMmu::entry(std::uint64_t ga) const {
    auto slot = table_.find_leaf(ga);
    if (!slot) return 0;
    const std::uint64_t e = at(slot->entry).load(std::memory_order_acquire);
    return Pte::present(e) ? e : 0;
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

FaultResult ShadowMmu::fault(std::uint32_t vcpu, std::uint64_t guest_address, Access access) {
    ShadowCounters& c = counters_[vcpu].c;
    ++c.faults;
    const std::uint64_t ga = guest_address & ~(kPage - 1);
    // Snapshots before the memslot lookup and the host lookup: a memslot
    // removal or an invalidation that completes between them and the
    // install changes one of them, and the install is refused.
    const std::uint64_t slots_gen = slots_gen_.load(std::memory_order_acquire);
    std::uint64_t seq = invalidate_seq_.load(std::memory_order_acquire);
    sched::point(sched::Point::FaultSequenceRead); // snapshots, then the lookups they guard
    Memslot slot;
    {
        ReaderSlotLock::SharedGuard lock(slots_lock_, vcpu);
        const Memslot* s = memslots_.find_guest(ga);
        if (!s) {
            ++c.no_memslot;
            return FaultResult::NoMemslot;
        }
        slot = *s;
    }
    sched::point(sched::Point::FaultSnapshot);
    if (access == Access::Write && !slot.writable) {
        ++c.refused;
        return FaultResult::Refused;
    }
    const std::uint64_t ha = slot.host_start + (ga - slot.guest_start);
    if (config_.coherence == CoherencePolicy::RangeActive && range_active_blocks()) {
        ++c.retries;
        return FaultResult::Retry;
    }

    if (config_.coherence == CoherencePolicy::PtLock) {
        // Resolve the host PTE and install while holding its PT lock; fault
        // the host page in (without locks) when it is not usable yet.
        for (int attempt = 0; attempt < 3; ++attempt) {
            {
                auto guard = host_.lock_pte(ha, vcpu);
                if (guard) {
                    ++c.host_lock_acquisitions;
                    c.host_shared_atomics += guard.shared_rmws();
                    const std::uint64_t pte = guard.pte();
                    if (X86PteFormat::present(pte) && (access == Access::Read || X86PteFormat::writable(pte))) {
                        guard.mark_accessed(access);
                        if (after_host_lookup) after_host_lookup(vcpu, ga);
                        sched::point(sched::Point::FaultInstall); // holding the host PT lock, as the policy says
                        if (defect::kFaultSnapshotLate) seq = invalidate_seq_.load(std::memory_order_acquire);
                        return install(vcpu, ga, slot, {X86PteFormat::pfn(pte), X86PteFormat::writable(pte)}, access,
                                       {seq, slots_gen}, ha);
                    }
                }
            }
            const HostFaultResult r = host_.fault(ha, access, vcpu);
            c.host_lock_acquisitions += r.locks;
            c.host_shared_atomics += r.shared_atomics;
            if (r.status == HostFaultStatus::OutOfFrames) {
                ++c.out_of_frames;
                return FaultResult::OutOfFrames;
            }
            if (r.status != HostFaultStatus::Mapped) {
                ++c.refused;
                return FaultResult::Refused;
            }
        }
        ++c.retries;
        return FaultResult::Retry;
    }

    const HostFaultResult r = host_.fault(ha, access, vcpu);
    c.host_lock_acquisitions += r.locks;
    c.host_shared_atomics += r.shared_atomics;
    if (r.status == HostFaultStatus::OutOfFrames) {
        ++c.out_of_frames;
        return FaultResult::OutOfFrames;
    }
    if (r.status != HostFaultStatus::Mapped) {
        ++c.refused;
        return FaultResult::Refused;
    }
    if (after_host_lookup) after_host_lookup(vcpu, ga);
    sched::point(sched::Point::FaultInstall);
    if (defect::kFaultSnapshotLate) seq = invalidate_seq_.load(std::memory_order_acquire);
    return install(vcpu, ga, slot, r.translation, access, {seq, slots_gen}, ha);
}

FaultResult ShadowMmu::install(std::uint32_t vcpu, std::uint64_t ga, const Memslot& slot, HostTranslation t,
                               Access access, Snapshot snap, std::uint64_t ha) {
    PaddedCounters& pc = counters_[vcpu];
    ShadowCounters& c = pc.c;
    RadixTable<Pte>::Slot leaf_slot;
    if (const auto t = pc.leaf.table_for(ga)) {
        leaf_slot = table_.leaf_slot(*t, ga);
    } else {
        // New tables come from the vCPU's frame cache; linking one writes
        // the parent table's line, which neighbouring tables share (counted).
        const auto walk = table_.walk_or_create(ga, vcpu);
        c.lock_acquisitions += walk.locks;
        c.shared_atomics += walk.shared_rmws;
        if (!walk.found()) {
            ++c.out_of_frames;
            return FaultResult::OutOfFrames;
        }
        leaf_slot = walk.slot;
        pc.leaf.remember(ga, leaf_slot.table);
    }
    const auto* leaf = &leaf_slot;
    PolicyLock lock(*this, leaf->table, c, PolicyLock::Mode::Fault, vcpu);
    // An invalidation in progress refuses installs in the hull of its guest
    // ranges (as KVM's range check does) -- everywhere under range-active,
    // whose point is backing off from any active range. Every policy refuses
    // an install across a memslot removal (the slot it looked up may be
    // gone); the sequence number is the seq policy's.
    const bool in_progress = config_.coherence == CoherencePolicy::RangeActive ? range_active_blocks()
                                                                               : invalidation_covers(ga);
    bool stale = in_progress || slots_gen_.load(std::memory_order_acquire) != snap.slots_gen;
    if (config_.coherence == CoherencePolicy::Seq && !defect::kSkipSeqRecheck)
        stale = stale || invalidate_seq_.load(std::memory_order_acquire) != snap.seq;
    if (config_.coherence == CoherencePolicy::RangeActive && !stale) {
        const auto now = host_.lookup(ha);
        stale = !now || now->pfn != t.pfn || now->writable != t.writable;
    }
    if (stale) {
        ++c.retries;
        return FaultResult::Retry;
    }
    const bool writable = t.writable && slot.writable;
    if (access == Access::Write && !writable) {
        ++c.refused;
        return FaultResult::Refused;
    }
    Perms perms{};
    perms.read = true;
    perms.write = writable;
    perms.exec = true;
    perms.user = true;
    // The fault is an access: the entry starts young, as the CPU would mark it.
    std::uint64_t fresh = Pte::with_accessed(Pte::make_leaf(t.pfn, perms), true);
    if (config_.cpu_walks && writable) fresh = Pte::with_dirty(fresh, true);
    // Join the table's shootdown targets before publishing: a zap of the
    // entry takes the policy lock we hold after we drop it, so it sees the
    // entry and the bit alike.
    if (mask_for_table(leaf->table, vcpu).set(vcpu)) ++c.shared_atomics;
    sched::point(sched::Point::InstallRegistered); // in the mask, then the entry
    auto entry = at(leaf->entry);
    std::uint64_t old = entry.load(std::memory_order_acquire);
    const std::uint64_t gfn = ga >> 12;
    // Global and split hold the only lock under which anything installs
    // into this table: the entry is published with a plain store (aging's
    // lock-free accessed-bit update either lands before it and is
    // overwritten, or fails on it and retries on the new entry). Rw faults
    // install side by side under the shared lock: a compare-exchange.
    // Global also excludes every other rmap writer (zaps too take the
    // mutex); split does not (a fault into another table may map the frame).
    const bool sole_installer = config_.lock != LockPolicy::Rw;
    const Rmap::Writers rmap_writers =
        config_.lock == LockPolicy::Global ? Rmap::Writers::Excluded : Rmap::Writers::Concurrent;
    for (;;) {
        if (Pte::present(old) && Pte::pfn(old) == t.pfn && (Pte::writable(old) || !writable)) {
            // Already there, yet the CPU faulted: its TLB was stale, or the
            // guest scribbled on the mirror it walks. Publish the path again
            // so a scribbled mirror cannot fault the same access forever.
            if (frames().mirrored()) table_.mirror_path(ga);
            break;
        }
        bool published = true;
        if (sole_installer)
            entry.store(fresh, std::memory_order_release);
        else
            published = entry.compare_exchange_weak(old, fresh, std::memory_order_acq_rel, std::memory_order_acquire);
        if (published) {
            frames().mirror(leaf->entry);
            sched::point(sched::Point::InstallPublished); // the entry, then its rmap link
            // A frame's rmap head with other writers possible: one
            // compare-exchange (or its bit lock), counted as a lock, and a
            // shared RMW unless the line is ours. Excluded: a plain store.
            const auto rmap_cost = [&](Pfn pfn) {
                if (rmap_writers == Rmap::Writers::Excluded) return;
                ++c.lock_acquisitions;
                if (!line_private(pfn, vcpu)) ++c.shared_atomics;
            };
            if (Pte::present(old) && Pte::pfn(old) != t.pfn) {
                rmap_.remove(Pte::pfn(old), gfn, rmap_writers);
                rmap_.add(t.pfn, gfn, rmap_writers);
                rmap_cost(Pte::pfn(old));
                rmap_cost(t.pfn);
            } else if (!Pte::present(old)) {
                rmap_.add(t.pfn, gfn, rmap_writers);
                rmap_cost(t.pfn);
            }
            ++c.installs;
            break;
        }
    }
    return FaultResult::Installed;
}

ShadowCounters ShadowMmu::counters() const {
    ShadowCounters sum = fault_counters();
    sum += counters_[config_.vcpus].c;
    return sum;
}

ShadowCounters ShadowMmu::fault_counters() const {
    ShadowCounters sum;
    for (std::uint32_t i = 0; i < config_.vcpus; ++i) sum += counters_[i].c;
    return sum;
}

} // namespace hv::mmu
