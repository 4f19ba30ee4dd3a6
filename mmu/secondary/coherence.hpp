#pragma once
// When may a fault install what it found in the host tables? Each coherence
// policy (shadow_types.hpp) answers in a class of its own, made by
// Coherence::make. What the invalidation side records for them, the same
// for every policy, lives in the base: the count of invalidations in
// progress, the hull of their guest ranges, the sequence number of ended
// invalidations and the generation of removed memslots.
//
// The protocol, as KVM's mmu_invalidate_seq and range check: begin() marks
// a range in progress before its entries are zapped; end() moves the
// sequence, then drops the count. A fault takes snapshot() before it looks
// up its memslot and the host, then under the policy lock asks stale(): a
// fault whose lookups may predate a host change that a zap has already
// cleared from the tables must not install, and retries.
#include "mmu/secondary/fault.hpp"
#include "mmu/secondary/memslots.hpp"
#include "mmu/secondary/shadow_types.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>

namespace hv::mmu {

class Coherence {
public:
    static std::unique_ptr<Coherence> make(HostAddressSpace& host, const ShadowConfig& config);
    virtual ~Coherence() = default;
    Coherence(const Coherence&) = delete;
    Coherence& operator=(const Coherence&) = delete;

    // The invalidation side. begin() and retire_memslot() are called one at
    // a time (the caller holds the MMU's zap mutex); end() may run beside a
    // begin(), which at worst leaves the hull larger than needed.
    void begin(std::span<const GuestRange> ranges);
    void end();
    // Before a removed memslot's range is zapped: a fault that looked the
    // slot up before must not install through it.
    void retire_memslot();
    // Returns once no invalidation is in progress: a new memslot must not
    // appear during one, since its range is not in the announced hull.
    void wait_idle() const;

    // The fault side, in the order a fault calls them.
    FaultSnapshot snapshot() const;
    // The host lookup: fills f.host (and, for ptlock, f.host_pte), or
    // returns the result the fault ends with.
    virtual std::optional<FaultResult> resolve(ShadowFault& f) = 0;
    // Under the policy lock, right before the install publishes: true when
    // the fault must retry.
    virtual bool stale(const ShadowFault& f) const = 0;

    // For the policies' classes (public so make() can build them).
    Coherence(HostAddressSpace& host, std::size_t batch) : host_(host), batch_(batch) {}

protected:
    // Faults the host page in and reads its translation (seq, range-active).
    std::optional<FaultResult> fault_host(ShadowFault& f);
    // An invalidation in progress covers the guest page (KVM's range check).
    bool covers(std::uint64_t ga) const;
    // Any invalidation in progress, wherever (range-active backs off then).
    bool any_active() const;
    bool memslots_retired_since(const FaultSnapshot& s) const {
        return slots_gen_.load(std::memory_order_acquire) != s.slots_gen;
    }
    bool ended_since(const FaultSnapshot& s) const { return seq_.load(std::memory_order_acquire) != s.seq; }

    HostAddressSpace& host_;

private:
    std::size_t batch_; // the zap batch (the range-active-batch-boundary defect reads it)
    std::atomic<std::uint64_t> seq_{0};
    std::atomic<std::uint64_t> slots_gen_{0};
    std::atomic<std::int64_t> in_progress_{0};
    std::atomic<std::uint64_t> lo_{0}, hi_{0}; // hull of in-progress guest ranges
};

} // namespace hv::mmu
