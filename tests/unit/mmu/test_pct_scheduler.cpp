// PctScheduler: which thread runs when, waits, bounded waits, deadlocks,
// and that the same configuration gives the same interleaving. The bodies
// call the scheduling points directly (sched::detail), so these run in any
// build; the schedule fuzz target uses the same scheduler through the
// points in the MMU (mmu/sync/sched_point.hpp).
#include "mmu/check/pct_scheduler.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <string>
#include <vector>

using namespace hv::mmu;
using sched::Point;

namespace {

// Bodies append to one log; only one runs at a time, so no lock is needed
// (the scheduler's hand-overs order the appends).
struct Log {
    std::string text;
    void add(char c) { text += c; }
};

// A body that logs `c` `n` times with a scheduling point before each.
std::function<void()> steps(Log& log, char c, int n) {
    return [&log, c, n] {
        for (int i = 0; i < n; ++i) {
            sched::detail::point(Point::Program);
            log.add(c);
        }
    };
}

} // namespace

TEST_CASE("PctScheduler: without change points the thread of highest priority runs to its end first") {
    Log log;
    PctConfig cfg;
    cfg.priorities = {1, 3, 2};
    PctScheduler s(cfg);
    const PctResult r = s.run({{"a", steps(log, 'a', 3)}, {"b", steps(log, 'b', 3)}, {"c", steps(log, 'c', 3)}});
    CHECK(log.text == "bbbcccaaa");
    CHECK(r.steps == 9);
    CHECK(r.lost_control.empty());
    CHECK(r.errors.empty());
}

TEST_CASE("PctScheduler: a change point drops the running thread below every other") {
    Log log;
    PctConfig cfg;
    cfg.priorities = {2, 1};
    cfg.change_points = {{2}}; // at a's second point, before its second step
    PctScheduler s(cfg);
    const PctResult r = s.run({{"a", steps(log, 'a', 3)}, {"b", steps(log, 'b', 3)}});
    CHECK(log.text == "abbbaa");
    CHECK(r.switches == 2); // a -> b at step 2, b -> a when b finished
    REQUIRE(r.trace.size() == 2);
    CHECK(r.trace[0].step == 2);
    CHECK(r.trace[0].at == Point::Program);
    CHECK(r.trace[1].at == Point::Finished);
}

TEST_CASE("PctScheduler: a kind point of occurrence 0 drops every thread that reaches that kind") {
    const auto once = [](PctChangePoint change) {
        Log log;
        PctConfig cfg;
        cfg.priorities = {3, 2, 1};
        cfg.change_points = {change};
        PctScheduler s(cfg);
        const auto body = [&log](char c, Point first) {
            return [&log, c, first] {
                sched::detail::point(first);
                log.add(c);
                sched::detail::point(Point::Program);
                log.add(c);
            };
        };
        s.run({{"a", body('a', Point::FaultInstall)},
               {"b", body('b', Point::FaultInstall)},
               {"c", body('c', Point::Program)}});
        return log.text;
    };
    CHECK(once({1, Point::FaultInstall}) == "bbccaa"); // only a, at the first
    CHECK(once({0, Point::FaultInstall}) == "ccaabb"); // a, then b; the tie goes to a
}

TEST_CASE("PctScheduler: the change points' order in the list, not in time, ranks the threads they drop") {
    const auto once = [](std::vector<PctChangePoint> change_points) {
        Log log;
        PctConfig cfg;
        cfg.priorities = {3, 2, 1};
        cfg.change_points = std::move(change_points);
        PctScheduler s(cfg);
        s.run({{"a", steps(log, 'a', 3)}, {"b", steps(log, 'b', 3)}, {"c", steps(log, 'c', 3)}});
        return log.text;
    };
    // a drops at step 1, b at step 2; c runs out, then the higher rank.
    CHECK(once({{1}, {2}}) == "cccbbbaaa");
    CHECK(once({{2}, {1}}) == "cccaaabbb");
}

TEST_CASE("PctScheduler: a kind point drops the thread that takes the n-th step of that kind, whoever it is") {
    // a: program, fault-install, program; b: fault-install, program. With
    // a first, the second fault-install step overall is b's.
    Log log;
    const auto body = [&log](char c, std::vector<Point> points) {
        return [&log, c, points] {
            for (const Point p : points) {
                sched::detail::point(p);
                log.add(c);
            }
        };
    };
    PctConfig cfg;
    cfg.priorities = {2, 1, 0};
    cfg.change_points = {{2, Point::FaultInstall}, {9, Point::FaultInstall}}; // the 9th never comes
    PctScheduler s(cfg);
    const PctResult r = s.run({{"a", body('a', {Point::Program, Point::FaultInstall, Point::Program})},
                               {"b", body('b', {Point::FaultInstall, Point::Program})},
                               {"c", body('c', {Point::FaultInstall, Point::Program})}});
    // a runs out (1 fault-install), b starts and takes the 2nd: b drops below c.
    CHECK(log.text == "aaaccbb");
    REQUIRE(r.trace.size() >= 2);
    CHECK(r.trace[1].at == Point::FaultInstall);
    CHECK(r.trace[1].step == 4);
}

TEST_CASE("PctScheduler: a waiting thread lets the others run until one of them takes a step") {
    Log log;
    bool flag = false;
    PctConfig cfg;
    cfg.priorities = {2, 1};
    PctScheduler s(cfg);
    const PctResult r = s.run({{"waiter",
                                [&] {
                                    while (!flag) sched::detail::blocked(Point::LockBusy);
                                    log.add('w');
                                }},
                               {"setter", [&] {
                                    log.add('1');
                                    sched::detail::point(Point::Program); // the waiter re-checks here: still unset
                                    flag = true;
                                    log.add('2');
                                }}});
    CHECK(log.text == "12w");
    CHECK_FALSE(r.deadlock);
    // waiter blocks, setter's point re-enables the waiter, which blocks again.
    CHECK(r.steps == 3);
}

TEST_CASE("PctScheduler: a retrying thread drops below the others, and goes on alone when none can run") {
    Log log;
    PctConfig cfg;
    cfg.priorities = {2, 1};
    PctScheduler s(cfg);
    const auto retrier = [&] {
        for (int i = 0; i < 3; ++i) {
            sched::detail::yield(Point::FaultRetry);
            log.add('r');
        }
    };
    const PctResult r = s.run({{"retrier", retrier}, {"other", steps(log, 'o', 2)}});
    CHECK(log.text == "oorrr"); // priority 2 first, but its first yield put it below "other"
    CHECK_FALSE(r.deadlock);

    Log alone_log;
    PctConfig one;
    one.priorities = {1};
    PctScheduler alone(one);
    const PctResult a = alone.run({{"retrier", [&] {
                                        for (int i = 0; i < 3; ++i) {
                                            sched::detail::yield(Point::FaultRetry);
                                            alone_log.add('r');
                                        }
                                    }}});
    CHECK(alone_log.text == "rrr");
    CHECK(a.steps == 3);
    CHECK(a.switches == 0);
    CHECK(a.lost_control.empty());
}

TEST_CASE("PctScheduler: a bounded wait gives up when no other thread can run") {
    bool never = false, gave_up = false;
    PctConfig cfg;
    cfg.priorities = {1};
    PctScheduler s(cfg);
    const PctResult r = s.run({{"alone", [&] {
                                    while (!never)
                                        if (sched::detail::wait_timed_out(Point::AckWait)) {
                                            gave_up = true;
                                            break;
                                        }
                                }}});
    CHECK(gave_up);
    CHECK(r.forced_timeouts == 1);
    CHECK(r.timeouts == 0);
    CHECK_FALSE(r.deadlock);
}

TEST_CASE("PctScheduler: a bounded wait gives up after its rounds while the others run without answering") {
    Log log;
    bool never = false;
    PctConfig cfg;
    cfg.priorities = {2, 1};
    cfg.bounded_rounds = 3;
    PctScheduler s(cfg);
    const PctResult r = s.run({{"sender",
                                [&] {
                                    while (!never)
                                        if (sched::detail::wait_timed_out(Point::AckWait)) break;
                                    log.add('s');
                                }},
                               {"busy", steps(log, 'b', 10)}});
    // Three waits, "busy" taking a step (point, then its log) after each;
    // the fourth call gives up, after two of busy's logs.
    CHECK(log.text == "bbsbbbbbbbb");
    CHECK(r.forced_timeouts == 1);
}

TEST_CASE("PctScheduler: the timeout bits make a bounded wait give up at once") {
    for (const std::uint32_t bits : {0u, 1u}) {
        CAPTURE(bits);
        Log log;
        bool acked = false;
        PctConfig cfg;
        cfg.priorities = {2, 1};
        cfg.timeouts = bits;
        PctScheduler s(cfg);
        const PctResult r = s.run({{"sender",
                                    [&] {
                                        while (!acked)
                                            if (sched::detail::wait_timed_out(Point::AckWait)) {
                                                log.add('t');
                                                return;
                                            }
                                        log.add('s');
                                    }},
                                   {"target", [&] {
                                        acked = true;
                                        log.add('a');
                                    }}});
        // Bit 0 set: the sender gives up before the target ran. Clear: the
        // wait lets the target run and sees its acknowledgement.
        CHECK(log.text == (bits ? "ta" : "as"));
        CHECK(r.timeouts == bits);
    }
}

TEST_CASE("PctScheduler: every thread waiting without a bound is a deadlock, reported with where each waits") {
    // Atomic: once control ends the two run at the same time.
    std::atomic<bool> release{false}, a{false}, b{false};
    std::string seen;
    PctConfig cfg;
    cfg.priorities = {1, 2};
    PctScheduler s(cfg);
    s.on_lost_control = [&](const std::string& why) {
        seen = why;
        release = true;
    };
    const PctResult r = s.run({{"first",
                                [&] {
                                    while (!b && !release) sched::detail::blocked(Point::LockBusy);
                                    a = true;
                                }},
                               {"second", [&] {
                                    while (!a && !release) sched::detail::blocked(Point::FaultRetry);
                                    b = true;
                                }}});
    CHECK(r.deadlock);
    CHECK(r.lost_control == seen);
    CHECK(seen.find("deadlock") != std::string::npos);
    CHECK(seen.find("first at lock-busy") != std::string::npos);
    CHECK(seen.find("second at fault-retry") != std::string::npos);
}

TEST_CASE("PctScheduler: the step limit ends control and the threads finish freely") {
    PctConfig cfg;
    cfg.priorities = {1, 2};
    cfg.max_steps = 50;
    PctScheduler s(cfg);
    const PctResult r = s.run({{"a", [] { for (int i = 0; i < 200; ++i) sched::detail::point(Point::Program); }},
                               {"b", [] { for (int i = 0; i < 200; ++i) sched::detail::point(Point::Program); }}});
    CHECK(r.steps == 51);
    CHECK(r.lost_control.find("more than 50 steps") != std::string::npos);
    CHECK_FALSE(r.deadlock);
}

TEST_CASE("PctScheduler: an exception leaving a body is reported and the others still run") {
    Log log;
    PctConfig cfg;
    cfg.priorities = {2, 1};
    PctScheduler s(cfg);
    const PctResult r = s.run({{"thrower", [] {
                                    sched::detail::point(Point::Program);
                                    throw std::runtime_error("boom");
                                }},
                               {"other", steps(log, 'o', 2)}});
    CHECK(log.text == "oo");
    REQUIRE(r.errors.size() == 1);
    CHECK(r.errors[0] == "thrower: boom");
}

TEST_CASE("PctScheduler: the same configuration gives the same interleaving, another one a different one") {
    // Three threads that mix steps, waits and bounded waits over shared
    // counters; the log records the order of their effects.
    const auto once = [](std::vector<PctChangePoint> change_points, std::uint32_t timeouts) {
        Log log;
        int tokens = 0;
        PctConfig cfg;
        cfg.priorities = {5, 9, 7};
        cfg.change_points = std::move(change_points);
        cfg.timeouts = timeouts;
        PctScheduler s(cfg);
        const auto producer = [&](char c) {
            return [&log, &tokens, c] {
                for (int i = 0; i < 20; ++i) {
                    sched::detail::point(Point::Program);
                    ++tokens;
                    log.add(c);
                }
            };
        };
        const PctResult r = s.run({{"p", producer('p')},
                                   {"q", producer('q')},
                                   {"consumer", [&] {
                                        for (int i = 0; i < 30; ++i) {
                                            while (tokens == 0)
                                                if (sched::detail::wait_timed_out(Point::AckWait)) break;
                                            if (tokens > 0) --tokens;
                                            log.add('c');
                                        }
                                    }}});
        return std::pair(log.text, r.digest);
    };
    const auto first = once({{3}, {17}, {40}}, 0x5);
    for (int i = 0; i < 10; ++i) {
        CAPTURE(i);
        const auto again = once({{3}, {17}, {40}}, 0x5);
        CHECK(again.first == first.first);
        CHECK(again.second == first.second);
    }
    const auto other = once({{4}, {17}, {40}}, 0x5);
    CHECK(other.first != first.first);
    CHECK(other.second != first.second);
}

TEST_CASE("PctScheduler: a number of threads other than the priorities is refused") {
    PctConfig cfg;
    cfg.priorities = {1, 2};
    PctScheduler s(cfg);
    CHECK_THROWS_WITH_AS(s.run({{"only", [] {}}}), "PctScheduler::run: expected 2 threads (one per priority), got 1",
                         std::invalid_argument);
}
