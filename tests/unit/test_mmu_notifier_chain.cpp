#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <latch>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "notifier_chain.hpp"

using namespace std::chrono_literals;
using hv::mmu::HostRange;
using hv::mmu::InvalidateEvent;
using hv::mmu::MmuNotifier;
using hv::mmu::NotifierChain;
using hv::mmu::StartResult;

namespace {

// A shared, ordered log of "<name>.<call>" entries.
class Log {
public:
    void add(std::string entry) {
        std::lock_guard lock(mutex_);
        entries_.push_back(std::move(entry));
    }
    std::vector<std::string> take() {
        std::lock_guard lock(mutex_);
        return std::exchange(entries_, {});
    }

private:
    std::mutex mutex_;
    std::vector<std::string> entries_;
};

// Records its calls in a Log; answers and hooks are set by the test.
class Recorder final : public MmuNotifier {
public:
    Recorder(std::string name, Log& log) : name_(std::move(name)), log_(log) {}

    StartResult start_answer = StartResult::Ok;
    bool young = false;
    std::function<void()> on_start, on_end, on_release;
    HostRange last_range{};
    InvalidateEvent last_event = InvalidateEvent::Clear;
    bool last_blockable = false;
    int releases = 0;

    StartResult invalidate_range_start(HostRange range, InvalidateEvent event, bool blockable) override {
        log_.add(name_ + ".start");
        last_range = range;
        last_event = event;
        last_blockable = blockable;
        if (on_start) on_start();
        if (start_answer == StartResult::Ok || blockable) open_.push_back({range, event});
        return start_answer;
    }
    void invalidate_range_end(HostRange range, InvalidateEvent event) override {
        log_.add(name_ + ".end");
        // Each end closes one open start with the same range and event.
        auto it = std::find_if(open_.begin(), open_.end(),
                               [&](const Open& o) { return o.range == range && o.event == event; });
        CHECK(it != open_.end());
        if (it != open_.end()) open_.erase(it);
        if (on_end) on_end();
    }
    std::size_t open_starts() const { return open_.size(); }
    void invalidate_page(std::uint64_t host_address, InvalidateEvent) override {
        log_.add(name_ + ".page@" + std::to_string(host_address));
    }
    bool clear_young(HostRange) override {
        log_.add(name_ + ".clear_young");
        return young;
    }
    bool test_young(HostRange) override {
        log_.add(name_ + ".test_young");
        return young;
    }
    void release() override {
        log_.add(name_ + ".release");
        ++releases;
        if (on_release) on_release();
    }

private:
    struct Open {
        HostRange range;
        InvalidateEvent event;
    };
    std::string name_;
    Log& log_;
    std::vector<Open> open_; // starts without their end yet
};

using Entries = std::vector<std::string>;
constexpr HostRange range_a{0x10000, 0x14000};

} // namespace

TEST_CASE("NotifierChain: range start goes in subscription order, end in reverse") {
    Log log;
    Recorder a("A", log), b("B", log), c("C", log);
    NotifierChain chain;
    chain.subscribe(a);
    chain.subscribe(b);
    chain.subscribe(c);
    CHECK(chain.subscriber_count() == 3);

    auto inv = chain.begin(range_a, InvalidateEvent::Migrate, true);
    REQUIRE(inv.has_value());
    CHECK(inv->active());
    CHECK(inv->subscribers() == 3);
    CHECK(inv->range() == range_a);
    CHECK(log.take() == Entries{"A.start", "B.start", "C.start"});
    CHECK(b.last_range == range_a);
    CHECK(b.last_event == InvalidateEvent::Migrate);
    CHECK(b.last_blockable);

    inv->end();
    CHECK_FALSE(inv->active());
    CHECK(log.take() == Entries{"C.end", "B.end", "A.end"});
    inv->end(); // idempotent
    inv.reset();
    CHECK(log.take().empty());
    CHECK(a.open_starts() + b.open_starts() + c.open_starts() == 0);

    const auto n = chain.counters();
    CHECK(n.starts == 3);
    CHECK(n.ends == 3);
    CHECK(n.try_again == 0);
    CHECK(n.subscribes == 3);
    CHECK(n.unsubscribes == 0);

    // No subscribers: begin still succeeds, nothing is called.
    NotifierChain empty;
    auto none = empty.begin(range_a, InvalidateEvent::Unmap, false);
    REQUIRE(none.has_value());
    CHECK(none->subscribers() == 0);
}

TEST_CASE("NotifierChain: non-blockable TryAgain aborts, then the started ones are ended at once") {
    Log log;
    Recorder a("A", log), b("B", log), c("C", log);
    b.start_answer = StartResult::TryAgain;
    NotifierChain chain;
    chain.subscribe(a);
    chain.subscribe(b);
    chain.subscribe(c);

    auto inv = chain.begin(range_a, InvalidateEvent::Unmap, false);
    CHECK_FALSE(inv.has_value());
    // A got its end right away; B (which refused) gets no end; C nothing.
    CHECK(log.take() == Entries{"A.start", "B.start", "A.end"});
    CHECK_FALSE(a.last_blockable);
    CHECK(a.open_starts() + b.open_starts() + c.open_starts() == 0);

    const auto n = chain.counters();
    CHECK(n.starts == 2); // calls delivered, including the refused one
    CHECK(n.ends == 1);
    CHECK(n.try_again == 1);
    CHECK(n.try_again_ignored == 0);

    // The failed begin left its reader section: a grace period from this
    // thread is allowed and completes, and unsubscribe is not deferred.
    chain.synchronize();
    chain.unsubscribe(c);
    CHECK(chain.counters().deferred_waits == 0);

    // Once B agrees, the same range goes through.
    b.start_answer = StartResult::Ok;
    auto again = chain.begin(range_a, InvalidateEvent::Unmap, false);
    CHECK(again.has_value());
    again.reset();
    CHECK(log.take() == Entries{"A.start", "B.start", "B.end", "A.end"});
}

TEST_CASE("NotifierChain: blockable TryAgain is counted and treated as Ok") {
    Log log;
    Recorder a("A", log), b("B", log), c("C", log);
    b.start_answer = StartResult::TryAgain;
    NotifierChain chain;
    chain.subscribe(a);
    chain.subscribe(b);
    chain.subscribe(c);

    auto inv = chain.begin(range_a, InvalidateEvent::Protect, true);
    REQUIRE(inv.has_value());
    CHECK(inv->subscribers() == 3);
    inv.reset();
    CHECK(log.take() == Entries{"A.start", "B.start", "C.start", "C.end", "B.end", "A.end"});
    const auto n = chain.counters();
    CHECK(n.starts == 3);
    CHECK(n.ends == 3);
    CHECK(n.try_again == 1);
    CHECK(n.try_again_ignored == 1);
}

TEST_CASE("NotifierChain: the destructor ends an un-ended invalidation, then moves transfer it") {
    Log log;
    Recorder a("A", log), b("B", log);
    NotifierChain chain;
    chain.subscribe(a);
    chain.subscribe(b);

    {
        auto inv = chain.begin(range_a, InvalidateEvent::SwapOut, true);
        REQUIRE(inv.has_value());
        CHECK(log.take() == Entries{"A.start", "B.start"});
    }
    CHECK(log.take() == Entries{"B.end", "A.end"});

    {
        auto first = chain.begin(range_a, InvalidateEvent::Unmap, true);
        REQUIRE(first.has_value());
        hv::mmu::RangeInvalidation moved = std::move(*first);
        CHECK_FALSE(first->active());
        first.reset(); // the moved-from one ends nothing
        CHECK(log.take() == Entries{"A.start", "B.start"});

        // Move-assigning over a live invalidation ends that one first.
        auto second = chain.begin(HostRange{0x20000, 0x21000}, InvalidateEvent::Merge, true);
        REQUIRE(second.has_value());
        CHECK(log.take() == Entries{"A.start", "B.start"});
        moved = std::move(*second);
        CHECK(log.take() == Entries{"B.end", "A.end"});
        CHECK(moved.range() == HostRange{0x20000, 0x21000});
        CHECK(moved.event() == InvalidateEvent::Merge);
    }
    CHECK(log.take() == Entries{"B.end", "A.end"});
    CHECK(chain.counters().starts == 6);
    CHECK(chain.counters().ends == 6);
}

TEST_CASE("NotifierChain: unsubscribe blocks until the invalidation holding the old list ends") {
    Log log;
    Recorder a("A", log), b("B", log);
    NotifierChain chain;
    chain.subscribe(a);
    chain.subscribe(b);

    auto inv = chain.begin(range_a, InvalidateEvent::Unmap, true);
    REQUIRE(inv.has_value());
    CHECK(log.take() == Entries{"A.start", "B.start"});

    std::atomic<bool> returned{false};
    std::atomic<bool> b_ended_before_return{false};
    b.on_end = [&] { b_ended_before_return = !returned.load(); };
    std::latch go(1);
    std::thread remover([&] {
        go.wait();
        chain.unsubscribe(b);
        returned = true;
    });
    go.count_down();

    // Wait until the new list is published, then give unsubscribe ample time
    // to return early if it (wrongly) did not wait.
    while (chain.counters().unsubscribes == 0) std::this_thread::yield();
    CHECK_FALSE(chain.subscribed(b));
    std::this_thread::sleep_for(50ms);
    CHECK_FALSE(returned.load());

    // Invalidations begun now no longer see B (a nested section here).
    {
        auto inv2 = chain.begin(range_a, InvalidateEvent::Protect, true);
        REQUIRE(inv2.has_value());
    }
    CHECK(log.take() == Entries{"A.start", "A.end"});
    CHECK_FALSE(returned.load());

    // B still gets the end for the start it got, before unsubscribe returns.
    inv->end();
    remover.join();
    CHECK(returned.load());
    CHECK(b_ended_before_return.load());
    CHECK(b.open_starts() == 0);
    CHECK(log.take() == Entries{"B.end", "A.end"});
    CHECK(chain.counters().deferred_waits == 0);
}

TEST_CASE("NotifierChain: a subscriber added during an invalidation sees neither its start nor its end") {
    Log log;
    Recorder a("A", log), late("L", log), from_other("O", log);
    NotifierChain chain;
    chain.subscribe(a);

    auto inv = chain.begin(range_a, InvalidateEvent::Unmap, true);
    REQUIRE(inv.has_value());
    chain.subscribe(late); // from the invalidating thread: never waits
    std::thread other([&] { chain.subscribe(from_other); });
    other.join();
    CHECK(chain.subscriber_count() == 3);
    inv.reset();
    CHECK(log.take() == Entries{"A.start", "A.end"});

    // The next one sees all three.
    chain.begin(range_a, InvalidateEvent::Unmap, true).reset();
    CHECK(log.take() == Entries{"A.start", "L.start", "O.start", "O.end", "L.end", "A.end"});

    // Subscribing from inside a callback works too, for later invalidations.
    NotifierChain chain2;
    Recorder x("X", log), y("Y", log);
    x.on_start = [&] { chain2.subscribe(y); };
    chain2.subscribe(x);
    chain2.begin(range_a, InvalidateEvent::Unmap, true).reset();
    CHECK(log.take() == Entries{"X.start", "X.end"});
    x.on_start = nullptr;
    chain2.begin(range_a, InvalidateEvent::Unmap, true).reset();
    CHECK(log.take() == Entries{"X.start", "Y.start", "Y.end", "X.end"});
}

TEST_CASE("NotifierChain: unsubscribe from inside a callback is deferred, not a deadlock") {
    Log log;
    Recorder a("A", log), b("B", log), c("C", log);
    NotifierChain chain;
    chain.subscribe(a);
    chain.subscribe(b);
    chain.subscribe(c);

    SUBCASE("another subscriber, from a start callback") {
        a.on_start = [&] {
            chain.unsubscribe(b);
            CHECK_THROWS_AS(chain.synchronize(), std::logic_error); // would wait for itself
            CHECK_THROWS_AS(chain.release(), std::logic_error);
        };
        auto inv = chain.begin(range_a, InvalidateEvent::Unmap, true);
        REQUIRE(inv.has_value());
        // This invalidation keeps its list: B still gets start and end.
        inv.reset();
        CHECK(log.take() == Entries{"A.start", "B.start", "C.start", "C.end", "B.end", "A.end"});
        CHECK(chain.counters().deferred_waits == 1);
        a.on_start = nullptr;
        chain.synchronize(); // the owner's wait before destroying B
        chain.begin(range_a, InvalidateEvent::Unmap, true).reset();
        CHECK(log.take() == Entries{"A.start", "C.start", "C.end", "A.end"});
    }
    SUBCASE("itself, from its end callback") {
        c.on_end = [&] { chain.unsubscribe(c); };
        chain.begin(range_a, InvalidateEvent::Unmap, true).reset();
        CHECK(log.take() == Entries{"A.start", "B.start", "C.start", "C.end", "B.end", "A.end"});
        c.on_end = nullptr;
        CHECK(chain.counters().deferred_waits == 1);
        CHECK_FALSE(chain.subscribed(c));
    }
    SUBCASE("while this thread holds an un-ended invalidation") {
        auto inv = chain.begin(range_a, InvalidateEvent::Unmap, true);
        REQUIRE(inv.has_value());
        chain.unsubscribe(a);
        CHECK(chain.counters().deferred_waits == 1);
        inv.reset();
        CHECK(log.take() == Entries{"A.start", "B.start", "C.start", "C.end", "B.end", "A.end"});
        chain.unsubscribe(b); // outside any section: waits (nothing to wait for)
        CHECK(chain.counters().deferred_waits == 1);
    }
    SUBCASE("from a clear_young callback") {
        a.young = true;
        b.young = true;
        bool unsubscribed = false;
        Recorder d("D", log);
        // U unsubscribes D, which comes after it, from inside clear_young:
        // this fan-out keeps its list, so D is still asked.
        struct Unsubscriber final : MmuNotifier {
            NotifierChain& chain;
            MmuNotifier& victim;
            bool& done;
            Unsubscriber(NotifierChain& ch, MmuNotifier& v, bool& d) : chain(ch), victim(v), done(d) {}
            StartResult invalidate_range_start(HostRange, InvalidateEvent, bool) override { return StartResult::Ok; }
            void invalidate_range_end(HostRange, InvalidateEvent) override {}
            void invalidate_page(std::uint64_t, InvalidateEvent) override {}
            bool clear_young(HostRange) override {
                chain.unsubscribe(victim);
                done = true;
                return false;
            }
            bool test_young(HostRange) override { return false; }
            void release() override {}
        } u(chain, d, unsubscribed);
        chain.subscribe(u);
        chain.subscribe(d);
        CHECK(chain.clear_young(range_a));
        CHECK(unsubscribed);
        CHECK(log.take() == Entries{"A.clear_young", "B.clear_young", "C.clear_young", "D.clear_young"});
        CHECK(chain.counters().deferred_waits == 1);
        chain.synchronize();
        chain.unsubscribe(u);
    }
}

TEST_CASE("NotifierChain: invalidate_page reaches every subscriber in order") {
    Log log;
    Recorder a("A", log), b("B", log);
    NotifierChain chain;
    chain.subscribe(a);
    chain.subscribe(b);
    chain.invalidate_page(0x7000, InvalidateEvent::Unmap);
    chain.invalidate_page(0x8000, InvalidateEvent::SwapOut);
    CHECK(log.take() == Entries{"A.page@28672", "B.page@28672", "A.page@32768", "B.page@32768"});
    CHECK(chain.counters().pages == 4);
    CHECK(chain.counters().starts == 0);
}

TEST_CASE("NotifierChain: clear_young asks everyone, then test_young stops at the first young") {
    Log log;
    Recorder a("A", log), b("B", log), c("C", log);
    NotifierChain chain;
    chain.subscribe(a);
    chain.subscribe(b);
    chain.subscribe(c);

    CHECK_FALSE(chain.clear_young(range_a));
    CHECK(log.take() == Entries{"A.clear_young", "B.clear_young", "C.clear_young"});
    CHECK_FALSE(chain.test_young(range_a));
    CHECK(log.take() == Entries{"A.test_young", "B.test_young", "C.test_young"});

    a.young = true; // the first one young: clear_young must still reach B and C
    CHECK(chain.clear_young(range_a));
    CHECK(log.take() == Entries{"A.clear_young", "B.clear_young", "C.clear_young"});

    a.young = false;
    b.young = true;
    CHECK(chain.clear_young(range_a));
    CHECK(log.take() == Entries{"A.clear_young", "B.clear_young", "C.clear_young"});
    CHECK(chain.test_young(range_a));
    CHECK(log.take() == Entries{"A.test_young", "B.test_young"}); // C not asked
}

TEST_CASE("NotifierChain: release waits for invalidations in flight, calls each once, kills the chain") {
    Log log;
    Recorder a("A", log), b("B", log);
    NotifierChain chain;
    chain.subscribe(a);
    chain.subscribe(b);

    auto inv = chain.begin(range_a, InvalidateEvent::Unmap, true);
    REQUIRE(inv.has_value());
    std::atomic<bool> released{false};
    std::thread releaser([&] {
        chain.release();
        released = true;
    });
    while (!chain.released()) std::this_thread::yield();
    // Dead: new calls are refused, even from this thread.
    CHECK_THROWS_AS((void)chain.begin(range_a, InvalidateEvent::Unmap, true), std::logic_error);
    CHECK_THROWS_AS(chain.invalidate_page(0x1000, InvalidateEvent::Unmap), std::logic_error);
    std::this_thread::sleep_for(30ms);
    CHECK_FALSE(released.load()); // still waiting for inv
    CHECK(a.releases == 0);
    inv.reset();
    releaser.join();
    CHECK(released.load());
    CHECK(log.take() == Entries{"A.start", "B.start", "B.end", "A.end", "A.release", "B.release"});
    CHECK(a.releases == 1);
    CHECK(b.releases == 1);

    CHECK_THROWS_AS((void)chain.begin(range_a, InvalidateEvent::Unmap, false), std::logic_error);
    CHECK_THROWS_AS(chain.clear_young(range_a), std::logic_error);
    CHECK_THROWS_AS(chain.test_young(range_a), std::logic_error);
    CHECK_THROWS_AS(chain.release(), std::logic_error);
    Recorder c("C", log);
    CHECK_THROWS_AS(chain.subscribe(c), std::logic_error);
    // Owners still unsubscribe on their way out.
    chain.unsubscribe(a);
    chain.unsubscribe(b);
    CHECK(chain.subscriber_count() == 0);
    CHECK(log.take().empty());
    // The failed calls left their sections: nothing is deferred.
    CHECK(chain.counters().deferred_waits == 0);
}

TEST_CASE("NotifierChain: unsubscribe from a release callback is deferred") {
    Log log;
    Recorder a("A", log), b("B", log);
    NotifierChain chain;
    chain.subscribe(a);
    chain.subscribe(b);
    a.on_release = [&] { chain.unsubscribe(a); };
    chain.release();
    CHECK(log.take() == Entries{"A.release", "B.release"});
    CHECK(chain.counters().deferred_waits == 1);
    CHECK(chain.subscriber_count() == 1);
}

TEST_CASE("NotifierChain: a throwing start ends the started subscribers and propagates") {
    Log log;
    Recorder a("A", log), b("B", log), c("C", log);
    b.on_start = [] { throw std::runtime_error("boom"); };
    NotifierChain chain;
    chain.subscribe(a);
    chain.subscribe(b);
    chain.subscribe(c);
    CHECK_THROWS_AS((void)chain.begin(range_a, InvalidateEvent::Unmap, true), std::runtime_error);
    CHECK(log.take() == Entries{"A.start", "B.start", "A.end"});
    chain.unsubscribe(c); // not inside a section any more: a real wait, no deferral
    CHECK(chain.counters().deferred_waits == 0);
}

TEST_CASE("NotifierChain: subscription misuse is a logic error") {
    Log log;
    Recorder a("A", log), b("B", log);
    NotifierChain chain;
    chain.subscribe(a);
    CHECK_THROWS_AS(chain.subscribe(a), std::logic_error);
    CHECK_THROWS_AS(chain.unsubscribe(b), std::logic_error);
    CHECK(chain.subscribed(a));
    CHECK_FALSE(chain.subscribed(b));
    chain.unsubscribe(a);
    CHECK_THROWS_AS(chain.unsubscribe(a), std::logic_error);
    chain.subscribe(a); // again after removal is fine
    CHECK(chain.counters().subscribes == 2);
    CHECK(chain.counters().unsubscribes == 1);
}

namespace {

// Small per-thread PRNG: the stress threads must not share one.
std::uint64_t next_random() {
    thread_local std::uint64_t state =
        0x9e3779b97f4a7c15ull ^ std::hash<std::thread::id>{}(std::this_thread::get_id());
    state ^= state << 13;
    state ^= state >> 7;
    state ^= state << 17;
    return state;
}

// Checks the chain's guarantees from the subscriber's side. Violations are
// counted (doctest assertions stay on the main thread).
class StressSub final : public MmuNotifier {
public:
    explicit StressSub(std::atomic<int>& violations) : violations_(violations) {}

    std::atomic<bool> gone{false}; // set when unsubscribe() returned
    std::atomic<int> in_flight{0};
    std::atomic<std::uint64_t> start_calls{0}, ok_starts{0}, ends{0}, refusals{0}, other_calls{0};

    StartResult invalidate_range_start(HostRange, InvalidateEvent, bool blockable) override {
        check_alive();
        start_calls.fetch_add(1, std::memory_order_relaxed);
        if (!blockable && next_random() % 8 == 0) {
            refusals.fetch_add(1, std::memory_order_relaxed);
            return StartResult::TryAgain; // no end may follow
        }
        in_flight.fetch_add(1, std::memory_order_relaxed);
        ok_starts.fetch_add(1, std::memory_order_relaxed);
        return StartResult::Ok;
    }
    void invalidate_range_end(HostRange, InvalidateEvent) override {
        check_alive();
        if (in_flight.fetch_sub(1, std::memory_order_relaxed) <= 0) violations_.fetch_add(1); // end without start
        ends.fetch_add(1, std::memory_order_relaxed);
    }
    void invalidate_page(std::uint64_t, InvalidateEvent) override { other(); }
    bool clear_young(HostRange) override { return other(); }
    bool test_young(HostRange) override { return other(); }
    void release() override { violations_.fetch_add(1); } // never released in the stress test

private:
    void check_alive() {
        if (gone.load(std::memory_order_relaxed)) violations_.fetch_add(1);
    }
    bool other() {
        check_alive();
        other_calls.fetch_add(1, std::memory_order_relaxed);
        return false;
    }
    std::atomic<int>& violations_;
};

} // namespace

TEST_CASE("NotifierChain: stress: invalidations race subscribe/unsubscribe") {
    NotifierChain chain;
    std::atomic<int> violations{0};
    std::atomic<bool> stop{false};

    // Totals over every subscriber that ever existed, to cross-check the
    // chain's counters.
    std::atomic<std::uint64_t> sum_start_calls{0}, sum_ends{0}, sum_refusals{0};
    std::atomic<int> unbalanced{0}, busy_after_unsubscribe{0};
    auto retire = [&](StressSub& s) {
        chain.unsubscribe(s);
        s.gone = true;
        // Every invalidation that could still hold s has ended, so has
        // delivered the ends for its starts.
        if (s.in_flight.load() != 0) busy_after_unsubscribe.fetch_add(1);
        if (s.ok_starts.load() != s.ends.load()) unbalanced.fetch_add(1);
        sum_start_calls += s.start_calls.load();
        sum_ends += s.ends.load();
        sum_refusals += s.refusals.load();
    };

    StressSub permanent(violations);
    chain.subscribe(permanent);

    std::atomic<std::uint64_t> begun{0}, refused{0}, churn{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 8; ++t) {
        threads.emplace_back([&, t] {
            std::uint64_t local_begun = 0, local_refused = 0;
            for (std::uint64_t i = 0; !stop.load(std::memory_order_relaxed); ++i) {
                const HostRange r{(i % 64) << 12, ((i % 64) + 1 + t) << 12};
                const bool blockable = (i + t) % 2 == 0;
                auto inv = chain.begin(r, InvalidateEvent::Unmap, blockable);
                if (!inv) {
                    ++local_refused;
                    continue;
                }
                ++local_begun;
                if (i % 16 == 0) std::this_thread::yield(); // hold a snapshot across a reschedule
                if (i % 32 == 0) chain.invalidate_page(r.start, InvalidateEvent::Unmap);
                if (i % 32 == 16) (void)chain.clear_young(r);
            }
            begun += local_begun;
            refused += local_refused;
        });
    }
    for (int t = 0; t < 2; ++t) {
        threads.emplace_back([&] {
            std::vector<std::unique_ptr<StressSub>> slots(4);
            std::uint64_t local_churn = 0;
            while (!stop.load(std::memory_order_relaxed)) {
                auto& slot = slots[next_random() % slots.size()];
                if (slot) {
                    retire(*slot);
                    slot.reset(); // destroyed right away: ASan catches a late call
                } else {
                    slot = std::make_unique<StressSub>(violations);
                    chain.subscribe(*slot);
                }
                ++local_churn;
            }
            for (auto& slot : slots)
                if (slot) retire(*slot);
            churn += local_churn;
        });
    }
    std::this_thread::sleep_for(400ms);
    stop = true;
    for (auto& th : threads) th.join();
    retire(permanent);

    CHECK(violations.load() == 0);
    CHECK(unbalanced.load() == 0);
    CHECK(busy_after_unsubscribe.load() == 0);
    CHECK(chain.subscriber_count() == 0);
    // Both sides made real progress, so the races were exercised.
    CHECK(begun.load() > 1000);
    CHECK(refused.load() > 0);
    CHECK(churn.load() > 20);
    CHECK(permanent.ok_starts.load() > 0);
    MESSAGE("stress: " << begun.load() << " invalidations, " << refused.load() << " refused, " << churn.load()
                       << " subscribe/unsubscribe");

    const auto n = chain.counters();
    CHECK(n.starts == sum_start_calls.load());
    CHECK(n.ends == sum_ends.load());
    CHECK(n.try_again == sum_refusals.load());
    CHECK(n.try_again_ignored == 0); // subscribers only refuse non-blockable starts
    CHECK(n.subscribes == n.unsubscribes);
    CHECK(n.deferred_waits == 0);
}
