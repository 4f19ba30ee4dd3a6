#pragma once
// NotifierChain: the subscribers (secondary MMUs) of one host address space,
// and the fan-out of every notifier call to all of them.
//
// Scheme: RCU-like snapshots with an SRCU-style grace period.
//   - The subscriber list is an immutable Snapshot. subscribe()/unsubscribe()
//     copy it, change the copy and publish it with one atomic pointer store
//     (under list_mutex_, which only writers take, never for long).
//   - A reader (a range invalidation from begin() to end(), or one
//     invalidate_page / clear_young / test_young / release fan-out) counts
//     itself in one of two phase counters, then loads the current snapshot,
//     and uses that same snapshot until it leaves. So a range invalidation
//     calls start AND end on exactly the same subscribers: one added meanwhile
//     sees neither, one removed meanwhile still gets the end for its start.
//   - unsubscribe() publishes the new list and then waits for a grace period:
//     every reader that counted itself before the publication has left (wait
//     for the other phase to drain, flip the phase so new readers count
//     elsewhere, wait for this phase to drain; the flip keeps continuous
//     invalidations from starving the writer). Readers never wait and never
//     lock. Retired snapshots are freed after the next grace period.
//   Why not per-snapshot reference counts: "load pointer, then increment its
//   count" races with the snapshot being freed in between and needs hazard
//   pointers or type-stable memory to fix. Why not defer list changes to the
//   last range end (the kernel's interval notifiers): that makes a writer wait
//   for a moment with no invalidation in flight at all, which continuous
//   invalidations from many threads may never give. A grace period only waits
//   for the readers that were already there.
//
// Guarantees:
//   (a) If unsubscribe(n) is called outside any reader section of this chain
//       on the calling thread, then once it returns the chain never calls n
//       again; its owner may destroy it.
//   (b) Every invalidate_range_end a subscriber receives matches an
//       invalidate_range_start it received from the same RangeInvalidation,
//       and every successful start is followed by exactly one end (the end
//       comes from end() or the destructor). Calls are not serialised: a
//       subscriber can be inside callbacks from several threads at once.
//   Deferred unsubscribe: a thread inside a reader section of this chain (in
//   a callback, or holding an un-ended RangeInvalidation) cannot wait for the
//   grace period: it is one of the readers waited for. unsubscribe() there
//   publishes the new list and returns without waiting (counted in
//   deferred_waits). Then only invalidations begun after it returned are
//   guaranteed not to call n; those in flight (including the caller's own)
//   still may, and deliver the ends for their starts. The owner must call
//   synchronize() from outside any reader section before destroying n.
//   Waiting across two chains (a callback of chain A unsubscribing from chain
//   B while a callback of B waits on A) is not detected: don't.
//
// Cost per range invalidation (our benchmarks count shared-line atomics):
//   the phase counter plays the part of a snapshot refcount, at the same
//   price: 2 atomic read-modify-writes on one shared cache line, written by
//   every invalidating thread (increment in begin(), decrement in end()),
//   plus 2 relaxed statistics RMWs (starts in begin(), ends in end()) on the
//   counters' own line. Everything else the reader touches (phase,
//   snapshot pointer, the snapshot, the dead flag, the waiter count) is
//   read-mostly: plain loads on x86. invalidate_page costs the same 2 + 1
//   statistics RMW, clear_young / test_young the 2 on the phase counter.
//   With no subscriber the statistics RMWs are skipped. subscribe/unsubscribe
//   take mutexes and unsubscribe may block; they are rare (VM setup and
//   teardown).
//
// Threading rules: a RangeInvalidation must be ended on the thread that began
// it (the per-thread reader-section bookkeeping that detects the deferred
// case lives in thread-local storage) and must not outlive the chain.
// Callbacks must not throw from invalidate_range_end (it runs in a destructor).
#include <atomic>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <vector>

#include "mmu/host/notifier.hpp"

namespace hv::mmu {

class NotifierChain {
    struct Snapshot;

public:
    // All counts are of callbacks delivered to subscribers (one per
    // subscriber per call), except subscribes/unsubscribes/deferred_waits.
    struct Counters {
        std::uint64_t starts = 0;            // invalidate_range_start calls, refused ones too
        std::uint64_t ends = 0;              // invalidate_range_end calls
        std::uint64_t pages = 0;             // invalidate_page calls
        std::uint64_t try_again = 0;         // TryAgain answers (blockable or not)
        std::uint64_t try_again_ignored = 0; // ... of them with blockable: treated as Ok
        std::uint64_t subscribes = 0;
        std::uint64_t unsubscribes = 0;
        std::uint64_t deferred_waits = 0;    // unsubscribes from inside a reader section
    };

    // One range invalidation in flight: holds the snapshot whose subscribers
    // got invalidate_range_start, and ends them (in reverse order) in end() or
    // the destructor. Move-only; end() on the beginning thread.
    class RangeInvalidation {
    public:
        RangeInvalidation(RangeInvalidation&& other) noexcept;
        RangeInvalidation& operator=(RangeInvalidation&& other) noexcept;
        RangeInvalidation(const RangeInvalidation&) = delete;
        RangeInvalidation& operator=(const RangeInvalidation&) = delete;
        ~RangeInvalidation() { end(); }

        // Calls invalidate_range_end on every subscriber that got the start,
        // in reverse order, and leaves the reader section. Idempotent.
        void end() noexcept;
        bool active() const { return chain_ != nullptr; }
        HostRange range() const { return range_; }
        InvalidateEvent event() const { return event_; }
        // How many subscribers got the start (and will get / got the end).
        std::size_t subscribers() const { return started_; }

    private:
        friend class NotifierChain;
        RangeInvalidation(NotifierChain& chain, const Snapshot* snap, unsigned phase, HostRange range,
                          InvalidateEvent event, std::size_t started)
            : chain_(&chain), snap_(snap), phase_(phase), range_(range), event_(event), started_(started) {}

        NotifierChain* chain_; // null once ended or moved from
        const Snapshot* snap_;
        unsigned phase_;
        HostRange range_;
        InvalidateEvent event_;
        std::size_t started_;
    };

    NotifierChain();
    // Every call on the chain must have returned and no RangeInvalidation may
    // be alive.
    ~NotifierChain();
    NotifierChain(const NotifierChain&) = delete;
    NotifierChain& operator=(const NotifierChain&) = delete;

    // Appends n (calls go in subscription order; ends in reverse). Never
    // waits for invalidations; safe from callbacks. std::logic_error if n is
    // already subscribed or the chain was released.
    void subscribe(MmuNotifier& n);
    // Removes n and, unless called inside a reader section of this chain on
    // this thread, waits until no invalidation can still call it (see the
    // header comment for the deferred case). std::logic_error if n is not
    // subscribed. Allowed after release().
    void unsubscribe(MmuNotifier& n);
    bool subscribed(const MmuNotifier& n) const;
    std::size_t subscriber_count() const;
    // Waits for a grace period: every reader in flight when it was called has
    // left; frees retired snapshots. std::logic_error inside a reader section
    // of this chain (it would wait for itself).
    void synchronize();

    // Starts a range invalidation: invalidate_range_start on each subscriber
    // in order. With !blockable a TryAgain answer aborts: the subscribers that
    // already got the start get invalidate_range_end at once (reverse order),
    // later ones get nothing, and begin returns an empty optional (the
    // caller's -EAGAIN). With blockable, TryAgain is a subscriber bug; it is
    // counted (try_again, try_again_ignored) and treated as Ok. If a start
    // callback throws, the already-started ones are ended and the exception
    // propagates. std::logic_error after release().
    [[nodiscard]] std::optional<RangeInvalidation> begin(HostRange range, InvalidateEvent event,
                                                         bool blockable);

    // The 2008 shape: one page, after its host PTE changed. Every subscriber.
    void invalidate_page(std::uint64_t host_address, InvalidateEvent event);
    // Calls every subscriber (no short-circuit: each must clear its own
    // accessed bits); true when any of them found a young page.
    bool clear_young(HostRange range);
    // Stops at the first subscriber that answers true: testing has no side
    // effect, so the rest need not be asked.
    bool test_young(HostRange range);
    // The address space goes away. Marks the chain dead (begin, invalidate_page,
    // clear_young, test_young, release and subscribe throw std::logic_error from
    // now on), waits for the invalidations in flight to end, then calls
    // release() once on each subscriber. std::logic_error if called twice or
    // from inside a reader section of this chain.
    void release();
    bool released() const { return dead_.load(std::memory_order_acquire); }

    Counters counters() const;

private:
    // Reader sections (see the header comment).
    struct Reader {
        const Snapshot* snap;
        unsigned phase;
    };
    struct ReadGuard; // RAII enter/leave for the one-shot fan-outs
    Reader enter(bool allow_dead);
    void leave(unsigned phase) noexcept;
    bool inside_reader() const;
    void wait_drained(unsigned phase);
    void grace_period_locked(); // gp_mutex_ held
    void publish_locked(std::unique_ptr<Snapshot> next); // list_mutex_ held
    void end_range(const Snapshot& snap, std::size_t started, HostRange range, InvalidateEvent event,
                   unsigned phase) noexcept;

    // Read by every reader, written by writers only: keep off the counter line.
    alignas(64) std::atomic<const Snapshot*> current_;
    std::atomic<unsigned> phase_{0};
    std::atomic<bool> dead_{false};
    std::atomic<unsigned> waiters_{0};
    // Written by every reader: the one shared line an invalidation must touch.
    alignas(64) std::atomic<std::int64_t> readers_[2]{};

    alignas(64) mutable std::mutex list_mutex_; // publishing a new list
    std::vector<std::unique_ptr<const Snapshot>> retired_; // under list_mutex_; freed by grace periods
    std::unique_ptr<const Snapshot> owned_current_;        // under list_mutex_
    std::mutex gp_mutex_;                                  // one grace period at a time
    std::mutex wait_mutex_;                                // with wait_cv_: a drained phase
    std::condition_variable wait_cv_;

    struct AtomicCounters {
        std::atomic<std::uint64_t> starts{0}, ends{0}, pages{0}, try_again{0}, try_again_ignored{0},
            subscribes{0}, unsubscribes{0}, deferred_waits{0};
    };
    alignas(64) AtomicCounters counters_;
};

using RangeInvalidation = NotifierChain::RangeInvalidation;

} // namespace hv::mmu
