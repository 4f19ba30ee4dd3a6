// The three coherence policies and the invalidation state they share.
#include "mmu/secondary/coherence.hpp"

#include "mmu/base/defects.hpp"
#include "mmu/base/units.hpp"
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

void Coherence::retire_memslot() { slots_gen_.fetch_add(1); }

void Coherence::wait_idle() const {
    while (in_progress_.load(std::memory_order_seq_cst) != 0) {
        if (sched::controlled())
            sched::yield(sched::Point::InvalidationActive);
        else
            std::this_thread::yield();
    }
}

FaultSnapshot Coherence::snapshot() const {
    return {seq_.load(std::memory_order_acquire), slots_gen_.load(std::memory_order_acquire)};
}

bool Coherence::covers(std::uint64_t ga) const {
    return in_progress_.load(std::memory_order_seq_cst) != 0 && lo_.load(std::memory_order_seq_cst) <= ga &&
           ga < hi_.load(std::memory_order_seq_cst);
}

bool Coherence::any_active() const {
    if (in_progress_.load(std::memory_order_seq_cst) == 0) return false;
    // The defect: an active range whose end falls on a zap batch boundary
    // is not seen.
    if (defect::kRangeActiveBatchBoundary && batch_ != 0 && hi_.load(std::memory_order_seq_cst) % (batch_ * kPage) == 0)
        return false;
    return true;
}

std::optional<FaultResult> Coherence::fault_host(ShadowFault& f) {
    const HostFaultResult r = host_.fault(f.ha, f.access, f.vcpu);
    f.counters.host_lock_acquisitions += r.locks;
    f.counters.host_shared_atomics += r.shared_atomics;
    if (r.status == HostFaultStatus::OutOfFrames) return FaultResult::OutOfFrames;
    if (r.status != HostFaultStatus::Mapped) return FaultResult::Refused;
    f.host = r.translation;
    return std::nullopt;
}

namespace {

// KVM's: an install is refused while an invalidation in progress covers
// its page, or once any invalidation ended after the fault began.
class SeqCoherence final : public Coherence {
public:
    using Coherence::Coherence;
    std::optional<FaultResult> resolve(ShadowFault& f) override { return fault_host(f); }
    bool stale(const ShadowFault& f) const override {
        return covers(f.ga) || memslots_retired_since(f.snapshot) ||
               (!defect::kSkipSeqRecheck && ended_since(f.snapshot));
    }
};

// The 2008 #v5 patch: the host PTE is read and the entry installed under
// the host PT lock, so no host change to the page can run in between; a
// range invalidation in progress still refuses installs in its hull.
class PtLockCoherence final : public Coherence {
public:
    using Coherence::Coherence;
    std::optional<FaultResult> resolve(ShadowFault& f) override {
        // The host page may not be usable yet: fault it in (without the
        // lock) and look again, a few times before the fault retries.
        for (int attempt = 0; attempt < 3; ++attempt) {
            {
                auto guard = host_.lock_pte(f.ha, f.vcpu);
                if (guard) {
                    ++f.counters.host_lock_acquisitions;
                    f.counters.host_shared_atomics += guard.shared_rmws();
                    const std::uint64_t pte = guard.pte();
                    if (X86PteFormat::present(pte) && (f.access == Access::Read || X86PteFormat::writable(pte))) {
                        guard.mark_accessed(f.access);
                        f.host = {X86PteFormat::pfn(pte), X86PteFormat::writable(pte)};
                        f.host_pte.emplace(std::move(guard));
                        return std::nullopt;
                    }
                }
            }
            if (auto end = fault_host(f)) return end;
        }
        return FaultResult::Retry;
    }
    bool stale(const ShadowFault& f) const override { return covers(f.ga) || memslots_retired_since(f.snapshot); }
};

// The GRU driver's: any active range makes faults back off, and the
// install re-reads the host translation under the policy lock.
class RangeActiveCoherence final : public Coherence {
public:
    using Coherence::Coherence;
    std::optional<FaultResult> resolve(ShadowFault& f) override {
        if (any_active()) return FaultResult::Retry;
        return fault_host(f);
    }
    bool stale(const ShadowFault& f) const override {
        if (any_active() || memslots_retired_since(f.snapshot)) return true;
        const auto now = host_.lookup(f.ha);
        return !now || now->pfn != f.host.pfn || now->writable != f.host.writable;
    }
};

} // namespace

std::unique_ptr<Coherence> Coherence::make(HostAddressSpace& host, const ShadowConfig& config) {
    switch (config.coherence) {
    case CoherencePolicy::Seq: return std::make_unique<SeqCoherence>(host, config.batch);
    case CoherencePolicy::PtLock: return std::make_unique<PtLockCoherence>(host, config.batch);
    case CoherencePolicy::RangeActive: return std::make_unique<RangeActiveCoherence>(host, config.batch);
    }
    return nullptr;
}

} // namespace hv::mmu
