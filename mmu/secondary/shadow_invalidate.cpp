// The shadow MMU's invalidation side: zaps in batches with one shootdown
// per batch, the notifier callbacks, aging, and audit(). See shadow_mmu.hpp.
#include "mmu/base/defects.hpp"
#include "mmu/base/units.hpp"
#include "mmu/secondary/policy_lock.hpp"
#include "mmu/secondary/shadow_mmu.hpp"

#include <algorithm>
#include <string>

namespace hv::mmu {
using shadow_detail::at;
using shadow_detail::kPage;

namespace {
constexpr std::uint64_t kTableSpan = 512 * kPage;
} // namespace

// Per batch, under the policy lock held exclusively: each present entry is
// cleared with a plain load and store (no installer can run: the lock
// excludes them; aging's lock-free accessed-bit updates only touch bits this
// clear overwrites, and leave the frame alone) and its rmap link removed
// (one compare-exchange under split; a plain store under global and rw,
// which exclude every other rmap writer). After the batch's last clear, one sequentially
// consistent fence, and only then the masks of the batch's tables are read:
// a walker sets its mask bit (sequentially consistent) before it reads an
// entry, so either we see its bit or it reads the cleared entry (the
// Dekker pattern walk() describes; the fence replaces an exchange per entry).
std::size_t ShadowMmu::zap_ranges(std::span<const GuestRange> ranges, ShadowCounters& c) {
    std::size_t total = 0;
    const std::size_t batch = config_.batch;
    std::vector<std::uint64_t> pages; // reused by every batch
    std::vector<Pfn> batch_tables;    // the leaf tables the batch cleared entries of
    pages.reserve(batch ? std::min<std::size_t>(batch, 4096) : 4096);
    // Global and rw zaps hold the lock every install holds (and zaps are
    // serialised by zap_mutex_): no other rmap writer runs, so an inline
    // link goes with a plain store. Split zaps hold one table's lock while
    // faults into other tables may map the same frame.
    const Rmap::Writers rmap_writers =
        config_.lock == LockPolicy::Split ? Rmap::Writers::Concurrent : Rmap::Writers::Excluded;
    for (const GuestRange& r : ranges) {
        // Leaf tables are never freed while the MMU lives, so the list stays valid.
        std::vector<std::pair<Pfn, std::uint64_t>> tables;
        table_.for_each_leaf_table(r.start, r.end, [&](Pfn pfn, std::uint64_t start) { tables.push_back({pfn, start}); });
        std::size_t t = 0;
        std::uint64_t cursor = r.start;
        bool batch_full = false; // the last lock hold stopped inside the range at the batch limit
        while (t < tables.size()) {
            const Pfn table = tables[t].first;
            const std::uint64_t table_end = std::min(r.end, tables[t].second + kTableSpan);
            const std::uint64_t from = std::max(cursor, tables[t].second);
            VcpuMask targets;
            pages.clear();
            batch_tables.clear();
            std::uint64_t next, stop;
            {
                PolicyLock lock(*this, table, c, PolicyLock::Mode::Zap, config_.vcpus);
                // Global and rw hold everything: keep going across tables up
                // to the batch; split holds one table at a time.
                stop = config_.lock == LockPolicy::Split ? table_end : r.end;
                if (defect::kZapReadsMasksFirst) { // every table the batch may reach, before any clear
                    for (std::size_t k = t; k < tables.size(); ++k)
                        if (VcpuMask* m = table_masks_[tables[k].first].load(std::memory_order_acquire))
                            targets.merge(*m);
                    sched::point(sched::Point::ZapMasksRead);
                }
                if (defect::kZapFlushesBeforeClearing && shootdown_) { // the batch flushed first, cleared below
                    std::vector<std::uint64_t> present;
                    VcpuMask early;
                    table_.for_each_leaf(from, stop, batch, [&](std::uint64_t addr, const auto& slot) {
                        const std::uint64_t e = at(slot.entry).load(std::memory_order_relaxed);
                        if (!Pte::present(e) || (e & kStaticBit)) return;
                        present.push_back(addr);
                        if (VcpuMask* m = table_masks_[slot.table].load(std::memory_order_acquire)) early.merge(*m);
                    });
                    if (!present.empty() && !early.empty()) shootdown_->shootdown(early, present);
                    sched::point(sched::Point::ZapBatchCleared);
                }
                next = table_.for_each_leaf(from, stop, batch, [&](std::uint64_t addr, const auto& slot) {
                    auto entry = at(slot.entry);
                    const std::uint64_t old = entry.load(std::memory_order_relaxed);
                    // Static entries never change once mapped.
                    if (!Pte::present(old) || (old & kStaticBit)) return;
                    if (defect::kDropLastOfBatch && batch > 1 && pages.size() + 1 == batch) return;
#ifdef HV_SHADOW_NO_FENCES
                    entry.exchange(0, std::memory_order_seq_cst);
#else
                    entry.store(0, std::memory_order_relaxed);
#endif
                    frames().mirror(slot.entry);
                    if (!(defect::kForgetRmapRemoval && (addr >> 12) % 8 == 7))
                        rmap_.remove(Pte::pfn(old), addr >> 12, rmap_writers);
                    if (batch_tables.empty() || batch_tables.back() != slot.table) batch_tables.push_back(slot.table);
                    pages.push_back(addr);
                    sched::point(sched::Point::ZapEntryCleared); // cleared; the masks are read after the last
                });
                if (!pages.empty() && !defect::kZapReadsMasksFirst) {
#ifndef HV_SHADOW_NO_FENCES
                    std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
                    for (const Pfn bt : batch_tables)
                        if (VcpuMask* m = table_masks_[bt].load(std::memory_order_acquire)) targets.merge(*m);
                    sched::point(sched::Point::ZapMasksRead);
                }
            }
            const bool resumed = batch_full;
            batch_full = next < stop; // for_each_leaf stops early only at the batch limit
            cursor = next;
            while (t < tables.size() && cursor >= std::min(r.end, tables[t].second + kTableSpan)) ++t;
            if (pages.empty()) continue;
            if (resumed) ++c.resumed_batches;
            sched::point(sched::Point::ZapBatchCleared);
            total += pages.size();
            c.zaps += pages.size();
            // Each rmap removal writes the frame's head, whose line the vCPU
            // that faulted the frame in writes too: with a read-modify-write
            // under split, a plain store under global and rw (not counted).
            if (rmap_writers == Rmap::Writers::Concurrent) {
                c.lock_acquisitions += pages.size();
                c.shared_atomics += pages.size();
            }
            ++c.batches;
            c.max_batch = std::max<std::uint64_t>(c.max_batch, pages.size());
            if (shootdown_ && !targets.empty() && !defect::kSkipShootdown && !defect::kZapFlushesBeforeClearing) {
                ++c.shootdowns;
                c.shootdown_targets += targets.count();
                shootdown_->shootdown(targets, pages);
            }
            sched::point(sched::Point::ZapBatchDone);
        }
    }
    return total;
}

std::size_t ShadowMmu::zap_guest_range(std::uint64_t start, std::uint64_t end) {
    const GuestRange r{start, end};
    std::lock_guard zaps(zap_mutex_);
    return zap_ranges(std::span(&r, 1), zap_slot());
}

std::size_t ShadowMmu::zap_frame(Pfn pfn) {
    std::vector<GuestRange> ranges;
    for (std::uint64_t gfn : rmap_.list(pfn)) ranges.push_back({gfn << 12, (gfn << 12) + kPage});
    std::lock_guard zaps(zap_mutex_);
    return zap_ranges(ranges, zap_slot());
}

std::vector<GuestRange> ShadowMmu::guest_ranges(HostRange range) const {
    ReaderSlotLock::SharedGuard lock(slots_lock_, slots_lock_.shared_slot());
    return memslots_.host_to_guest(range.start, range.end);
}

StartResult ShadowMmu::invalidate_range_start(HostRange range, InvalidateEvent, bool blockable) {
    std::unique_lock zaps(zap_mutex_, std::defer_lock);
    if (blockable)
        zaps.lock();
    else if (!zaps.try_lock())
        return StartResult::TryAgain;
    invalidate_guest(guest_ranges(range));
    return StartResult::Ok;
}

// Marked in progress before the zap: a fault that looked the host up before
// the host's change and installs after the zap must see the invalidation
// (its hull or the range-active count) and retry.
void ShadowMmu::invalidate_guest(std::span<const GuestRange> ranges) {
    if (defect::kZapBeforeBegin) zap_ranges(ranges, zap_slot());
    else begin_invalidation(ranges);
    sched::point(sched::Point::InvalidateBegun);
    if (defect::kZapBeforeBegin) begin_invalidation(ranges);
    else zap_ranges(ranges, zap_slot());
}

// The sequence moves before the count drops: a fault that snapshotted the
// sequence before this invalidation and checks after the count dropped sees
// the sequence moved (seq policy).
void ShadowMmu::end_invalidation() {
    if (defect::kEndDropsCountFirst) invalidate_in_progress_.fetch_sub(1);
    else invalidate_seq_.fetch_add(1);
    sched::point(sched::Point::InvalidateSequenced);
    if (defect::kEndDropsCountFirst) invalidate_seq_.fetch_add(1);
    else invalidate_in_progress_.fetch_sub(1);
}

// Caller holds zap_mutex_, so starts do not race each other; an end may
// run concurrently, which at worst leaves the hull larger than needed.
// The hull is written before the count goes up, and faults read it under
// the policy lock that the zap of their entry also takes, so a fault that
// could install an entry this invalidation zaps sees the widened hull.
void ShadowMmu::begin_invalidation(std::span<const GuestRange> ranges) {
    std::uint64_t lo = ~0ull, hi = 0;
    for (const GuestRange& r : ranges) {
        lo = std::min(lo, r.start);
        hi = std::max(hi, r.end);
    }
    if (invalidate_in_progress_.load(std::memory_order_seq_cst) == 0) {
        invalidate_lo_.store(lo, std::memory_order_seq_cst);
        invalidate_hi_.store(hi, std::memory_order_seq_cst);
    } else {
        invalidate_lo_.store(std::min(lo, invalidate_lo_.load()), std::memory_order_seq_cst);
        invalidate_hi_.store(std::max(hi, invalidate_hi_.load()), std::memory_order_seq_cst);
    }
    invalidate_in_progress_.fetch_add(1, std::memory_order_seq_cst);
}

bool ShadowMmu::range_active_blocks() const {
    if (invalidate_in_progress_.load(std::memory_order_seq_cst) == 0) return false;
    // The defect: an active range whose end falls on a zap batch boundary
    // is not seen.
    if (defect::kRangeActiveBatchBoundary && config_.batch != 0 &&
        invalidate_hi_.load(std::memory_order_seq_cst) % (config_.batch * kPage) == 0)
        return false;
    return true;
}

bool ShadowMmu::invalidation_covers(std::uint64_t ga) const {
    return invalidate_in_progress_.load(std::memory_order_seq_cst) != 0 &&
           invalidate_lo_.load(std::memory_order_seq_cst) <= ga && ga < invalidate_hi_.load(std::memory_order_seq_cst);
}

void ShadowMmu::invalidate_range_end(HostRange, InvalidateEvent) noexcept { end_invalidation(); }

void ShadowMmu::invalidate_page(std::uint64_t host_address, InvalidateEvent event) {
    const HostRange page{host_address & ~(kPage - 1), (host_address & ~(kPage - 1)) + kPage};
    invalidate_range_start(page, event, true);
    invalidate_range_end(page, event);
}

bool ShadowMmu::clear_young(HostRange range) {
    const std::vector<GuestRange> ranges = guest_ranges(range);
    bool young = false;
    if (config_.cpu_walks) return test_young(range); // accessed bits stay set: see ShadowConfig::cpu_walks
    for (const auto& r : ranges)
        table_.for_each_leaf(r.start, r.end, 0, [&](std::uint64_t, const auto& slot) {
            auto e = at(slot.entry);
            std::uint64_t old = e.load(std::memory_order_acquire);
            while (Pte::present(old) && Pte::accessed(old)) {
                if (e.compare_exchange_weak(old, Pte::with_accessed(old, false), std::memory_order_acq_rel)) {
                    frames().mirror(slot.entry);
                    young = true;
                    break;
                }
            }
        });
    return young;
}

bool ShadowMmu::test_young(HostRange range) {
    const std::vector<GuestRange> ranges = guest_ranges(range);
    bool young = false;
    for (const auto& r : ranges)
        table_.for_each_leaf(r.start, r.end, 0, [&](std::uint64_t, const auto& slot) {
            if (Pte::accessed(at(slot.entry).load(std::memory_order_acquire))) young = true;
        });
    return young;
}

void ShadowMmu::release() {
    subscribed_ = false;
    const GuestRange everything{0, MemslotTable::kAddressLimit};
    std::lock_guard zaps(zap_mutex_);
    zap_ranges(std::span(&everything, 1), zap_slot());
}

std::vector<std::string> ShadowMmu::audit() {
    std::vector<std::string> problems;
    // Copy the memslots and drop their lock before asking the host: the host
    // calls into us (invalidate_page) holding its own locks, and we never
    // take a host lock while holding one of ours except on the fault path.
    MemslotTable slots_copy;
    std::vector<StaticRange> statics_copy;
    {
        ReaderSlotLock::SharedGuard slots(slots_lock_, slots_lock_.shared_slot());
        slots_copy = memslots_;
        statics_copy = statics_;
    }
    std::size_t present = 0;
    table_.for_each_leaf(0, MemslotTable::kAddressLimit, 0, [&](std::uint64_t ga, const auto& slot) {
        const std::uint64_t e = at(slot.entry).load(std::memory_order_acquire);
        if (e & kStaticBit) {
            // Static entries have no memslot and no rmap link; they only
            // have to lie in a static range.
            if (std::none_of(statics_copy.begin(), statics_copy.end(),
                             [&](const StaticRange& r) { return r.start <= ga && ga < r.end; }))
                problems.push_back("static entry for " + hex(ga) + " lies outside every static range");
            return;
        }
        ++present;
        const auto ha = slots_copy.guest_to_host(ga);
        if (!ha) {
            problems.push_back("entry for " + hex(ga) + " lies outside every memslot");
            return;
        }
        const auto host = host_.lookup(*ha);
        if (!host)
            problems.push_back("entry for " + hex(ga) + " maps frame " + hex(Pte::pfn(e)) + " but host page " +
                               hex(*ha) + " is not present");
        else if (host->pfn != Pte::pfn(e))
            problems.push_back("entry for " + hex(ga) + " maps frame " + hex(Pte::pfn(e)) + ", the host maps " +
                               hex(host->pfn));
        else if (Pte::writable(e) && !host->writable)
            problems.push_back("entry for " + hex(ga) + " is writable, the host page is read-only");
        const auto links = rmap_.list(Pte::pfn(e));
        if (std::find(links.begin(), links.end(), ga >> 12) == links.end())
            problems.push_back("entry for " + hex(ga) + " has no rmap link from frame " + hex(Pte::pfn(e)));
    });
    if (rmap_.links() != present)
        problems.push_back("rmap holds " + std::to_string(rmap_.links()) + " links for " + std::to_string(present) +
                           " present entries");
    // Static entries never change after map_static: one that did means
    // something wrote into a table (after a guest triple fault, this tells
    // a wrecked table from a CPU that lost its way on intact ones).
    for (const StaticRange& r : statics_copy)
        for (std::uint64_t ga = r.start; ga < r.end; ga += kPage) {
            const std::uint64_t want = static_entry(r.first_frame + (ga - r.start) / kPage, r.writable);
            const std::uint64_t e = entry(ga);
            if (e != want)
                problems.push_back("static entry for " + hex(ga) + " is " + hex(e) + ", map_static wrote " + hex(want));
        }
    return problems;
}

} // namespace hv::mmu
