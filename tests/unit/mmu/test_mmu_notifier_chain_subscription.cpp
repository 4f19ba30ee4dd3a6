// hv::mmu::NotifierChain subscription and release: unsubscribe waits for the
// invalidations that hold the old list, subscribers added during an
// invalidation, unsubscribe from inside a callback is deferred, release
// waits for invalidations in flight and kills the chain, and misuse.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <latch>
#include <stdexcept>
#include <thread>

#include "mmu/host/notifier_chain.hpp"
#include "tests/support/notifier_chain_fixture.hpp"

using namespace std::chrono_literals;
using hv::mmu::HostRange;
using hv::mmu::InvalidateEvent;
using hv::mmu::MmuNotifier;
using hv::mmu::NotifierChain;
using hv::mmu::StartResult;
using namespace hv::mmu::test::notifier_chain;

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
            void invalidate_range_end(HostRange, InvalidateEvent) noexcept override {}
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
