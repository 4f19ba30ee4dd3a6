// hv::mmu::NotifierChain invalidations: range start in subscription order
// and end in reverse, TryAgain refusals (non-blockable and blockable),
// ending by destructor and by move, a throwing start, and the invalidate_page
// and clear_young / test_young fan-outs.
#include <doctest/doctest.h>

#include <stdexcept>
#include <utility>

#include "mmu/host/notifier_chain.hpp"
#include "tests/support/notifier_chain_fixture.hpp"

using hv::mmu::HostRange;
using hv::mmu::InvalidateEvent;
using hv::mmu::NotifierChain;
using hv::mmu::StartResult;
using namespace hv::mmu::test::notifier_chain;

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
