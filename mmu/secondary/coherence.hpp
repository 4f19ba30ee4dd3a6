#pragma once
// When may a fault install what it found in the host tables? Each coherence
// policy (shadow_types.hpp) answers in a class of its own below, with the
// same two functions (the CoherenceRule concept); the shadow MMU compiles
// its fault path once per policy and picks one per fault. What the
// invalidation side records for them, the same for every policy, is the
// Coherence object: the count of invalidations in progress, the hull of
// their guest ranges, the sequence number of ended invalidations and the
// generation of removed memslots.
//
// The protocol, as KVM's mmu_invalidate_seq and range check: begin() marks
// a range in progress before its entries are zapped; end() moves the
// sequence, then drops the count. A fault takes snapshot() before it looks
// up its memslot and the host, then under the policy lock asks the rule's
// stale(): a fault whose lookups may predate a host change that a zap has
// already cleared from the tables must not install, and retries.
#include "mmu/base/defects.hpp"
#include "mmu/base/units.hpp"
#include "mmu/secondary/fault.hpp"
#include "mmu/secondary/memslots.hpp"
#include "mmu/secondary/shadow_types.hpp"

#include <atomic>
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

namespace hv::mmu {

class Coherence {
public:
    Coherence(HostAddressSpace& host, std::size_t batch) : host_(host), batch_(batch) {}
    Coherence(const Coherence&) = delete;
    Coherence& operator=(const Coherence&) = delete;

    // The invalidation side. begin() and retire_memslot() are called one at
    // a time (the caller holds the MMU's zap mutex); end() may run beside a
    // begin(), which at worst leaves the hull larger than needed.
    void begin(std::span<const GuestRange> ranges);
    void end();
    // Before a removed memslot's range is zapped: a fault that looked the
    // slot up before must not install through it.
    void retire_memslot() { slots_gen_.fetch_add(1); }
    // Returns once no invalidation is in progress: a new memslot must not
    // appear during one, since its range is not in the announced hull.
    void wait_idle() const;

    // Taken when a fault begins, before its memslot and host lookups.
    FaultSnapshot snapshot() const {
        return {seq_.load(std::memory_order_acquire), slots_gen_.load(std::memory_order_acquire)};
    }

    // What the rules below ask.
    // An invalidation in progress covers the guest page (KVM's range check).
    bool covers(std::uint64_t ga) const {
        return in_progress_.load(std::memory_order_seq_cst) != 0 && lo_.load(std::memory_order_seq_cst) <= ga &&
               ga < hi_.load(std::memory_order_seq_cst);
    }
    // Any invalidation in progress, wherever.
    bool any_active() const {
        if (in_progress_.load(std::memory_order_seq_cst) == 0) return false;
        // The defect: an active range whose end falls on a zap batch boundary is not seen.
        return !(defect::kRangeActiveBatchBoundary && batch_ != 0 &&
                 hi_.load(std::memory_order_seq_cst) % (batch_ * kPage) == 0);
    }
    bool memslots_retired_since(const FaultSnapshot& s) const {
        return slots_gen_.load(std::memory_order_acquire) != s.slots_gen;
    }
    bool ended_since(const FaultSnapshot& s) const { return seq_.load(std::memory_order_acquire) != s.seq; }
    // Faults the host page in and reads its translation into f.host, or
    // returns the result the fault ends with.
    std::optional<FaultResult> fault_host(ShadowFault& f) const {
        const HostFaultResult r = host_.fault(f.ha, f.access, f.vcpu);
        f.counters.add_host(r.cost);
        if (r.status == HostFaultStatus::OutOfFrames) return FaultResult::OutOfFrames;
        if (r.status != HostFaultStatus::Mapped) return FaultResult::Refused;
        f.host = r.translation;
        return std::nullopt;
    }
    HostAddressSpace& host() const { return host_; }

private:
    HostAddressSpace& host_;
    std::size_t batch_; // the zap batch (the range-active-batch-boundary defect reads it)
    std::atomic<std::uint64_t> seq_{0};
    std::atomic<std::uint64_t> slots_gen_{0};
    std::atomic<std::int64_t> in_progress_{0};
    std::atomic<std::uint64_t> lo_{0}, hi_{0}; // hull of in-progress guest ranges
};

// A coherence policy's rule: resolve() is the host lookup (f.host filled,
// or the result the fault ends with); stale() is asked under the policy
// lock right before the install publishes (true: the fault retries).
template <class Rule>
concept CoherenceRule = requires(const Coherence& c, ShadowFault& f, const ShadowFault& cf) {
    { Rule::resolve(c, f) } -> std::same_as<std::optional<FaultResult>>;
    { Rule::stale(c, cf) } -> std::same_as<bool>;
};

// KVM's: an install is refused while an invalidation in progress covers
// its page, or once any invalidation ended after the fault began.
struct SeqCoherence {
    static std::optional<FaultResult> resolve(const Coherence& c, ShadowFault& f) { return c.fault_host(f); }
    static bool stale(const Coherence& c, const ShadowFault& f) {
        return c.covers(f.ga) || c.memslots_retired_since(f.snapshot) ||
               (!defect::kSkipSeqRecheck && c.ended_since(f.snapshot));
    }
};

// The 2008 #v5 patch: the host PTE is read and the entry installed under
// the host PT lock (kept in f.host_pte until the fault ends), so no host
// change to the page runs in between; a range invalidation in progress
// still refuses installs in its hull.
struct PtLockCoherence {
    static std::optional<FaultResult> resolve(const Coherence& c, ShadowFault& f);
    static bool stale(const Coherence& c, const ShadowFault& f) {
        return c.covers(f.ga) || c.memslots_retired_since(f.snapshot);
    }
};

// The GRU driver's: any active range makes faults back off, and the
// install re-reads the host translation under the policy lock.
struct RangeActiveCoherence {
    static std::optional<FaultResult> resolve(const Coherence& c, ShadowFault& f) {
        if (c.any_active()) return FaultResult::Retry;
        return c.fault_host(f);
    }
    static bool stale(const Coherence& c, const ShadowFault& f) {
        if (c.any_active() || c.memslots_retired_since(f.snapshot)) return true;
        const auto now = c.host().lookup(f.ha);
        return !now || now->pfn != f.host.pfn || now->writable != f.host.writable;
    }
};

static_assert(CoherenceRule<SeqCoherence> && CoherenceRule<PtLockCoherence> && CoherenceRule<RangeActiveCoherence>);

} // namespace hv::mmu
