// The shadow MMU as a notifier subscriber: invalidations (marked in
// progress, then zapped; ended), aging, release. The zaps are in
// shadow_zap.cpp.
#include "mmu/base/defects.hpp"
#include "mmu/base/units.hpp"
#include "mmu/secondary/shadow_mmu.hpp"
#include "mmu/sync/sched_point.hpp"

#include <vector>

namespace hv::mmu {

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
    else coherence_.begin(ranges);
    sched::point(sched::Point::InvalidateBegun);
    if (defect::kZapBeforeBegin) coherence_.begin(ranges);
    else zap_ranges(ranges, zap_slot());
}

void ShadowMmu::invalidate_range_end(HostRange, InvalidateEvent) noexcept { coherence_.end(); }

void ShadowMmu::invalidate_page(std::uint64_t host_address, InvalidateEvent event) {
    const HostRange page{host_address & ~(kPage - 1), (host_address & ~(kPage - 1)) + kPage};
    invalidate_range_start(page, event, true);
    invalidate_range_end(page, event);
}

bool ShadowMmu::clear_young(HostRange range) {
    if (config_.cpu_walks) return test_young(range); // accessed bits stay set: see ShadowConfig::cpu_walks
    const std::vector<GuestRange> ranges = guest_ranges(range);
    bool young = false;
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

} // namespace hv::mmu
