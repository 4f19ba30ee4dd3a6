// The invalidation side of Coherence, and the ptlock rule's host lookup.
#include "mmu/secondary/coherence.hpp"

#include "mmu/sync/sched_point.hpp"

#include <algorithm>
#include <thread>

namespace hv::mmu {

// Caller holds the zap mutex, so begins do not race each other. The hull
// is written before the count goes up, and faults read it under the policy
// lock that the zap of their entry also takes, so a fault that could
// install an entry this invalidation zaps sees the widened hull.
void Coherence::begin(std::span<const GuestRange> ranges) {
    std::uint64_t lo = ~0ull, hi = 0;
    for (const GuestRange& r : ranges) {
        lo = std::min(lo, r.start);
        hi = std::max(hi, r.end);
    }
    if (in_progress_.load(std::memory_order_seq_cst) == 0) {
        lo_.store(lo, std::memory_order_seq_cst);
        hi_.store(hi, std::memory_order_seq_cst);
    } else {
        lo_.store(std::min(lo, lo_.load()), std::memory_order_seq_cst);
        hi_.store(std::max(hi, hi_.load()), std::memory_order_seq_cst);
    }
    in_progress_.fetch_add(1, std::memory_order_seq_cst);
}

// The sequence moves before the count drops: a fault that snapshotted the
// sequence before this invalidation and checks after the count dropped
// sees the sequence moved (seq policy).
void Coherence::end() {
    if (defect::kEndDropsCountFirst) in_progress_.fetch_sub(1);
    else seq_.fetch_add(1);
    sched::point(sched::Point::InvalidateSequenced);
    if (defect::kEndDropsCountFirst) seq_.fetch_add(1);
    else in_progress_.fetch_sub(1);
}

void Coherence::wait_idle() const {
    while (in_progress_.load(std::memory_order_seq_cst) != 0) {
        if (sched::controlled())
            sched::yield(sched::Point::InvalidationActive);
        else
            std::this_thread::yield();
    }
}

std::optional<FaultResult> PtLockCoherence::resolve(const Coherence& c, ShadowFault& f) {
    // The host page may not be usable yet: fault it in (without the lock)
    // and look again, a few times before the fault retries.
    for (int attempt = 0; attempt < 3; ++attempt) {
        {
            auto guard = c.host().lock_pte(f.ha, f.vcpu);
            if (guard) {
                f.counters.add_host(guard.cost());
                const std::uint64_t pte = guard.pte();
                if (X86PteFormat::present(pte) && (f.access == Access::Read || X86PteFormat::writable(pte))) {
                    guard.mark_accessed(f.access);
                    f.host = {X86PteFormat::pfn(pte), X86PteFormat::writable(pte)};
                    f.host_pte.emplace(std::move(guard));
                    return std::nullopt;
                }
            }
        }
        if (auto end = c.fault_host(f)) return end;
    }
    return FaultResult::Retry;
}

} // namespace hv::mmu
