// Zaps: the entries of guest ranges cleared in batches, one shootdown per
// batch. See zap_iterator.hpp for where a zap yields.
#include "mmu/base/defects.hpp"
#include "mmu/base/units.hpp"
#include "mmu/secondary/policy_lock.hpp"
#include "mmu/secondary/shadow_mmu.hpp"
#include "mmu/secondary/zap_iterator.hpp"

#include <algorithm>
#include <vector>

namespace hv::mmu {

// What one batch cleared; reused from batch to batch.
struct ShadowMmu::ZapBatch {
    std::vector<std::uint64_t> pages; // guest addresses of the cleared entries
    std::vector<Pfn> tables;          // the leaf tables they were in
    VcpuMask targets;                 // who may cache any of them
    // Who else could write the rmap heads while the batch held its lock
    // (PolicyLock::rmap_writers), kept for counting after the lock is gone.
    Rmap::Writers rmap_writers = Rmap::Writers::Excluded;
    void clear() {
        pages.clear();
        tables.clear();
        targets.clear();
    }
};

std::size_t ShadowMmu::zap_ranges(std::span<const GuestRange> ranges, ShadowCounters& c) {
    ZapBatch batch;
    batch.pages.reserve(config_.batch ? std::min<std::size_t>(config_.batch, 4096) : 4096);
    std::size_t total = 0;
    for (const GuestRange& r : ranges)
        for (ZapIterator it(*this, r, c); it.next_batch();) {
            batch.clear();
            clear_batch(it, batch);
            it.end_batch();
            if (batch.pages.empty()) continue;
            if (it.resumed()) ++c.resumed_batches;
            sched::point(sched::Point::ZapBatchCleared);
            total += batch.pages.size();
            count_batch(batch, c);
            if (shootdown_ && !batch.targets.empty() && !defect::kSkipShootdown && !defect::kZapFlushesBeforeClearing) {
                ++c.shootdowns;
                c.shootdown_targets += batch.targets.count();
                shootdown_->shootdown(batch.targets, batch.pages);
            }
            sched::point(sched::Point::ZapBatchDone);
        }
    return total;
}

// Under the policy lock held exclusively: each present entry is cleared
// with a plain load and store (no installer can run: the lock excludes
// them; aging's lock-free accessed-bit updates only touch bits this clear
// overwrites, and leave the frame alone) and its rmap link removed. After
// the batch's last clear, one sequentially consistent fence, and only then
// the masks of the batch's tables are read: a walker sets its mask bit
// (sequentially consistent) before it reads an entry, so either we see its
// bit or it reads the cleared entry (the Dekker pattern walk() describes;
// the fence replaces an exchange per entry).
void ShadowMmu::clear_batch(ZapIterator& it, ZapBatch& batch) {
    const Rmap::Writers rmap_writers = batch.rmap_writers = it.lock().rmap_writers();
    if (defect::kZapReadsMasksFirst) { // every table the batch may reach, before any clear
        for (const auto& t : it.tables_ahead())
            if (VcpuMask* m = table_masks_[t.pfn].load(std::memory_order_acquire)) batch.targets.merge(*m);
        sched::point(sched::Point::ZapMasksRead);
    }
    if (defect::kZapFlushesBeforeClearing && shootdown_) { // the batch flushed first, cleared below
        std::vector<std::uint64_t> present;
        VcpuMask early;
        it.visit([&](std::uint64_t addr, const auto& slot) {
            const std::uint64_t e = at(slot.entry).load(std::memory_order_relaxed);
            if (!Pte::present(e) || (e & kStaticBit)) return;
            present.push_back(addr);
            if (VcpuMask* m = table_masks_[slot.table].load(std::memory_order_acquire)) early.merge(*m);
        });
        if (!present.empty() && !early.empty()) shootdown_->shootdown(early, present);
        sched::point(sched::Point::ZapBatchCleared);
    }
    it.for_each_entry([&](std::uint64_t addr, const auto& slot) {
        auto entry = at(slot.entry);
        const std::uint64_t old = entry.load(std::memory_order_relaxed);
        // Static entries never change once mapped.
        if (!Pte::present(old) || (old & kStaticBit)) return;
        if (defect::kDropLastOfBatch && config_.batch > 1 && batch.pages.size() + 1 == config_.batch) return;
#ifdef HV_SHADOW_NO_FENCES
        entry.exchange(0, std::memory_order_seq_cst);
#else
        entry.store(0, std::memory_order_relaxed);
#endif
        frames().mirror(slot.entry);
        if (!(defect::kForgetRmapRemoval && (addr >> 12) % 8 == 7)) rmap_.remove(Pte::pfn(old), addr >> 12, rmap_writers);
        if (batch.tables.empty() || batch.tables.back() != slot.table) batch.tables.push_back(slot.table);
        batch.pages.push_back(addr);
        sched::point(sched::Point::ZapEntryCleared); // cleared; the masks are read after the last
    });
    if (!batch.pages.empty() && !defect::kZapReadsMasksFirst) {
#ifndef HV_SHADOW_NO_FENCES
        std::atomic_thread_fence(std::memory_order_seq_cst);
#endif
        for (const Pfn t : batch.tables)
            if (VcpuMask* m = table_masks_[t].load(std::memory_order_acquire)) batch.targets.merge(*m);
        sched::point(sched::Point::ZapMasksRead);
    }
}

// Each rmap removal writes the frame's head, whose line the vCPU that
// faulted the frame in writes too: with a read-modify-write when other
// rmap writers run (split), a plain store otherwise (not counted).
void ShadowMmu::count_batch(const ZapBatch& batch, ShadowCounters& c) {
    c.zaps += batch.pages.size();
    if (batch.rmap_writers == Rmap::Writers::Concurrent) {
        c.lock_acquisitions += batch.pages.size();
        c.shared_atomics += batch.pages.size();
    }
    ++c.batches;
    c.max_batch = std::max<std::uint64_t>(c.max_batch, batch.pages.size());
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

} // namespace hv::mmu
