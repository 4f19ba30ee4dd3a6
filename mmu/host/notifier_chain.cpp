#include "mmu/host/notifier_chain.hpp"

#include <algorithm>
#include <array>
#include <cassert>
#include <stdexcept>
#include <utility>

// Memory ordering (why seq_cst where it is): two Dekker-style handshakes.
//  1. Reader: readers_[p] += 1, then load current_ (and dead_).
//     Writer: store current_ (or dead_), then load readers_[0] and [1].
//     In the single total order of seq_cst operations either the reader sees
//     the new pointer/flag, or the writer sees the reader's count and waits
//     for it. The reader's decrement (seq_cst, so also release) ordered before
//     the writer's load that sees the drained count makes every access to the
//     old snapshot happen before the writer frees it.
//  2. Reader leaving: readers_[p] -= 1, then load waiters_.
//     Waiter: waiters_ += 1, then load readers_[p] (under wait_mutex_).
//     Either the waiter sees the drained count, or the last reader sees the
//     waiter and notifies under the mutex: no lost wake-up.
// The phase the reader picks is only a hint for progress (a stale phase is
// still counted and waited for), so it is loaded relaxed.

namespace hv::mmu {

struct NotifierChain::Snapshot {
    std::vector<MmuNotifier*> subs; // immutable once published
};

namespace {

// Reader-section depth per chain on this thread: how unsubscribe() knows that
// waiting for a grace period would wait for the caller itself. A handful of
// slots is plenty: a thread is inside sections of very few chains at once.
struct SectionDepth {
    const NotifierChain* chain = nullptr;
    unsigned depth = 0; // 0: the slot is free
};
constexpr std::size_t max_chains_per_thread = 8;
thread_local std::array<SectionDepth, max_chains_per_thread> t_sections{};

SectionDepth* find_section(const NotifierChain* chain) {
    for (auto& s : t_sections)
        if (s.depth != 0 && s.chain == chain) return &s;
    return nullptr;
}

SectionDepth& claim_section(const NotifierChain* chain) {
    if (SectionDepth* s = find_section(chain)) return *s;
    for (auto& s : t_sections) {
        if (s.depth == 0) {
            s.chain = chain;
            return s;
        }
    }
    throw std::logic_error("NotifierChain: reader sections of too many chains nested on one thread");
}

} // namespace

struct NotifierChain::ReadGuard {
    NotifierChain& chain;
    Reader reader;
    ReadGuard(NotifierChain& c, bool allow_dead) : chain(c), reader(c.enter(allow_dead)) {}
    ~ReadGuard() { chain.leave(reader.phase); }
    ReadGuard(const ReadGuard&) = delete;
    ReadGuard& operator=(const ReadGuard&) = delete;
};

NotifierChain::NotifierChain() : owned_current_(std::make_unique<const Snapshot>()) {
    current_.store(owned_current_.get(), std::memory_order_release);
}

NotifierChain::~NotifierChain() {
    assert(readers_[0].load() == 0 && readers_[1].load() == 0 && "NotifierChain destroyed with readers in flight");
}

// ---------------------------------------------------------------------------
// Reader sections

NotifierChain::Reader NotifierChain::enter(bool allow_dead) {
    SectionDepth& slot = claim_section(this); // may throw: before any side effect
    const unsigned phase = phase_.load(std::memory_order_relaxed) & 1u;
    readers_[phase].fetch_add(1, std::memory_order_seq_cst);
    if (!allow_dead && dead_.load(std::memory_order_seq_cst)) {
        ++slot.depth; // leave() pairs with a depth it can drop
        leave(phase);
        throw std::logic_error("NotifierChain: notifier call after release()");
    }
    const Snapshot* snap = current_.load(std::memory_order_seq_cst);
    ++slot.depth;
    return {snap, phase};
}

void NotifierChain::leave(unsigned phase) noexcept {
    SectionDepth* slot = find_section(this);
    assert(slot && "reader section left on another thread than it was entered on");
    if (slot) --slot->depth;
    // After this decrement the section may no longer touch the snapshot or any
    // subscriber: a grace period may complete and both may be freed.
    if (readers_[phase].fetch_sub(1, std::memory_order_seq_cst) == 1 &&
        waiters_.load(std::memory_order_seq_cst) != 0) {
        std::lock_guard lock(wait_mutex_);
        wait_cv_.notify_all();
    }
}

bool NotifierChain::inside_reader() const { return find_section(this) != nullptr; }

// ---------------------------------------------------------------------------
// Writers and grace periods

void NotifierChain::wait_drained(unsigned phase) {
    if (readers_[phase].load(std::memory_order_seq_cst) == 0) return;
    waiters_.fetch_add(1, std::memory_order_seq_cst);
    {
        std::unique_lock lock(wait_mutex_);
        wait_cv_.wait(lock, [&] { return readers_[phase].load(std::memory_order_seq_cst) == 0; });
    }
    waiters_.fetch_sub(1, std::memory_order_seq_cst);
}

void NotifierChain::grace_period_locked() {
    // Everything retired so far was unpublished before this point, so the
    // readers that may still use it are among those waited for below.
    std::vector<std::unique_ptr<const Snapshot>> done;
    {
        std::lock_guard lock(list_mutex_);
        done.swap(retired_);
    }
    // Only grace periods write phase_, one at a time (gp_mutex_).
    const unsigned p = phase_.load(std::memory_order_relaxed);
    // Stragglers that read an old phase value may still count in the other
    // phase: drain it first, then flip so new readers count there, and drain
    // this phase, which from now on only loses readers.
    wait_drained((p + 1) & 1u);
    phase_.store(p + 1, std::memory_order_seq_cst);
    wait_drained(p & 1u);
    // `done` is freed here: no reader can hold those snapshots any more.
}

void NotifierChain::publish_locked(std::unique_ptr<Snapshot> next) {
    current_.store(next.get(), std::memory_order_seq_cst);
    retired_.push_back(std::move(owned_current_));
    owned_current_ = std::move(next);
}

void NotifierChain::subscribe(MmuNotifier& n) {
    {
        std::lock_guard lock(list_mutex_);
        // Checked under the list lock, which release() sets the flag under:
        // a subscriber either is in the list release() walks or is refused.
        if (dead_.load(std::memory_order_relaxed))
            throw std::logic_error("NotifierChain::subscribe after release()");
        const auto& subs = owned_current_->subs;
        if (std::find(subs.begin(), subs.end(), &n) != subs.end())
            throw std::logic_error("NotifierChain::subscribe: already subscribed");
        auto next = std::make_unique<Snapshot>();
        next->subs.reserve(subs.size() + 1);
        next->subs = subs;
        next->subs.push_back(&n);
        publish_locked(std::move(next));
    }
    counters_.subscribes.fetch_add(1, std::memory_order_relaxed);
}

void NotifierChain::unsubscribe(MmuNotifier& n) {
    {
        std::lock_guard lock(list_mutex_);
        const auto& subs = owned_current_->subs;
        auto it = std::find(subs.begin(), subs.end(), &n);
        if (it == subs.end()) throw std::logic_error("NotifierChain::unsubscribe: not subscribed");
        auto next = std::make_unique<Snapshot>();
        next->subs.reserve(subs.size() - 1);
        next->subs.insert(next->subs.end(), subs.begin(), it);
        next->subs.insert(next->subs.end(), it + 1, subs.end());
        publish_locked(std::move(next));
    }
    counters_.unsubscribes.fetch_add(1, std::memory_order_relaxed);
    if (inside_reader()) {
        // Waiting would wait for our own section: defer (see the header).
        counters_.deferred_waits.fetch_add(1, std::memory_order_relaxed);
        return;
    }
    std::lock_guard gp(gp_mutex_);
    grace_period_locked();
}

bool NotifierChain::subscribed(const MmuNotifier& n) const {
    std::lock_guard lock(list_mutex_);
    const auto& subs = owned_current_->subs;
    return std::find(subs.begin(), subs.end(), &n) != subs.end();
}

std::size_t NotifierChain::subscriber_count() const {
    std::lock_guard lock(list_mutex_);
    return owned_current_->subs.size();
}

void NotifierChain::synchronize() {
    if (inside_reader())
        throw std::logic_error("NotifierChain::synchronize inside a notifier call of the same chain");
    std::lock_guard gp(gp_mutex_);
    grace_period_locked();
}

// ---------------------------------------------------------------------------
// Fan-out

std::optional<NotifierChain::RangeInvalidation> NotifierChain::begin(HostRange range, InvalidateEvent event,
                                                                     bool blockable) {
    const Reader r = enter(false);
    const auto& subs = r.snap->subs;
    std::size_t started = 0; // subscribers whose start returned Ok (or ignored TryAgain)
    try {
        for (; started < subs.size(); ++started) {
            if (subs[started]->invalidate_range_start(range, event, blockable) == StartResult::Ok) continue;
            counters_.try_again.fetch_add(1, std::memory_order_relaxed);
            if (blockable) {
                // A blockable start has no reason to fail; the caller cannot
                // retry either. The subscriber must cope with the range.
                counters_.try_again_ignored.fetch_add(1, std::memory_order_relaxed);
                continue;
            }
            // Like the kernel's non-blockable start failing with -EAGAIN:
            // undo the starts already delivered, the failing one gets no end.
            counters_.starts.fetch_add(started + 1, std::memory_order_relaxed);
            end_range(*r.snap, started, range, event, r.phase);
            return std::nullopt;
        }
    } catch (...) {
        counters_.starts.fetch_add(started + 1, std::memory_order_relaxed);
        end_range(*r.snap, started, range, event, r.phase);
        throw;
    }
    if (started != 0) counters_.starts.fetch_add(started, std::memory_order_relaxed);
    return RangeInvalidation(*this, r.snap, r.phase, range, event, started);
}

void NotifierChain::end_range(const Snapshot& snap, std::size_t started, HostRange range,
                              InvalidateEvent event, unsigned phase) noexcept {
    for (std::size_t i = started; i-- > 0;) snap.subs[i]->invalidate_range_end(range, event);
    if (started != 0) counters_.ends.fetch_add(started, std::memory_order_relaxed);
    leave(phase);
}

void NotifierChain::invalidate_page(std::uint64_t host_address, InvalidateEvent event) {
    ReadGuard g(*this, false);
    const auto& subs = g.reader.snap->subs;
    for (MmuNotifier* s : subs) s->invalidate_page(host_address, event);
    if (!subs.empty()) counters_.pages.fetch_add(subs.size(), std::memory_order_relaxed);
}

bool NotifierChain::clear_young(HostRange range) {
    ReadGuard g(*this, false);
    bool young = false;
    for (MmuNotifier* s : g.reader.snap->subs) young = s->clear_young(range) || young; // call first: no short-circuit
    return young;
}

bool NotifierChain::test_young(HostRange range) {
    ReadGuard g(*this, false);
    for (MmuNotifier* s : g.reader.snap->subs)
        if (s->test_young(range)) return true;
    return false;
}

void NotifierChain::release() {
    if (inside_reader())
        throw std::logic_error("NotifierChain::release inside a notifier call of the same chain");
    {
        std::lock_guard lock(list_mutex_);
        if (dead_.load(std::memory_order_relaxed)) throw std::logic_error("NotifierChain::release called twice");
        dead_.store(true, std::memory_order_seq_cst);
    }
    // New calls now throw; let the ones already in flight finish, so that
    // release() is the last thing each subscriber hears from this chain.
    {
        std::lock_guard gp(gp_mutex_);
        grace_period_locked();
    }
    // A reader section of its own: a release callback may unsubscribe (that
    // is then deferred) without freeing the snapshot walked here.
    ReadGuard g(*this, true);
    for (MmuNotifier* s : g.reader.snap->subs) s->release();
}

NotifierChain::Counters NotifierChain::counters() const {
    constexpr auto r = std::memory_order_relaxed;
    return {counters_.starts.load(r),       counters_.ends.load(r),
            counters_.pages.load(r),        counters_.try_again.load(r),
            counters_.try_again_ignored.load(r), counters_.subscribes.load(r),
            counters_.unsubscribes.load(r), counters_.deferred_waits.load(r)};
}

// ---------------------------------------------------------------------------
// RangeInvalidation

NotifierChain::RangeInvalidation::RangeInvalidation(RangeInvalidation&& other) noexcept
    : chain_(other.chain_), snap_(other.snap_), phase_(other.phase_), range_(other.range_),
      event_(other.event_), started_(other.started_) {
    other.chain_ = nullptr;
}

NotifierChain::RangeInvalidation& NotifierChain::RangeInvalidation::operator=(RangeInvalidation&& other) noexcept {
    if (this != &other) {
        end();
        chain_ = other.chain_;
        snap_ = other.snap_;
        phase_ = other.phase_;
        range_ = other.range_;
        event_ = other.event_;
        started_ = other.started_;
        other.chain_ = nullptr;
    }
    return *this;
}

void NotifierChain::RangeInvalidation::end() noexcept {
    if (chain_ == nullptr) return;
    NotifierChain* chain = std::exchange(chain_, nullptr);
    chain->end_range(*snap_, started_, range_, event_, phase_);
}

} // namespace hv::mmu
