// hv::GuestLog (vmm/kvm/guest_log.hpp): the one limit on lines a guest can make
// the VMM print again and again. The first few of each kind go out, the rest
// are counted, and finish() prints the count.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "vmm/kvm/guest_log.hpp"

using hv::GuestLog;

namespace {

struct Captured {
    std::vector<std::string> lines;
    GuestLog::Sink sink() {
        return [this](std::string_view l) { lines.emplace_back(l); };
    }
};

} // namespace

TEST_CASE("GuestLog: the first `listed` lines of a kind are printed, the rest counted and summed up by finish()") {
    Captured out;
    GuestLog log(out.sink(), 3);
    for (int i = 0; i < 10; ++i) log.print("guest exception reports", "report " + std::to_string(i));
    REQUIRE(out.lines.size() == 3);
    CHECK(out.lines[0] == "report 0");
    CHECK(out.lines[2] == "report 2");
    CHECK(log.suppressed("guest exception reports") == 7);
    log.finish();
    REQUIRE(out.lines.size() == 4);
    CHECK(out.lines[3] == "... and 7 more guest exception reports (suppressed)");
}

TEST_CASE("GuestLog: kinds are limited apart, and a kind within its limit gets no summary") {
    Captured out;
    GuestLog log(out.sink(), 2);
    for (int i = 0; i < 5; ++i) log.print("lost-write lines", "lost " + std::to_string(i));
    log.print("coherence-check lines", "check 0");
    log.print("coherence-check lines", "check 1");
    CHECK(out.lines == std::vector<std::string>{"lost 0", "lost 1", "check 0", "check 1"});
    CHECK(log.suppressed("coherence-check lines") == 0);
    CHECK(log.suppressed("never seen") == 0);
    log.finish();
    CHECK(out.lines.back() == "... and 3 more lost-write lines (suppressed)");
    CHECK(out.lines.size() == 5);
}

TEST_CASE("GuestLog: a second finish() reports only what was suppressed since the first") {
    Captured out;
    GuestLog log(out.sink(), 1);
    log.print("k", "a");
    log.print("k", "b");
    log.finish();
    CHECK(out.lines == std::vector<std::string>{"a", "... and 1 more k (suppressed)"});
    log.finish();
    CHECK(out.lines.size() == 2);
    log.print("k", "c");
    log.print("k", "d");
    log.finish();
    CHECK(out.lines.back() == "... and 2 more k (suppressed)");
    CHECK(log.suppressed("k") == 3);
}

TEST_CASE("GuestLog: the destructor prints the count, so a log that is simply dropped still says it") {
    Captured out;
    {
        GuestLog log(out.sink(), 1);
        log.print("guest exception reports", "x");
        log.print("guest exception reports", "y");
        CHECK(out.lines.size() == 1);
    }
    CHECK(out.lines == std::vector<std::string>{"x", "... and 1 more guest exception reports (suppressed)"});
}

TEST_CASE("GuestLog: print_with makes the line only when it is printed") {
    Captured out;
    GuestLog log(out.sink(), 2);
    int made = 0;
    for (int i = 0; i < 100000; ++i)
        log.print_with("lost-write lines", [&] {
            ++made;
            return std::string("line");
        });
    CHECK(made == 2);
    CHECK(out.lines.size() == 2);
    CHECK(log.suppressed("lost-write lines") == 99998);
}

TEST_CASE("GuestLog: without a sink nothing is printed, and counting still works") {
    GuestLog log(nullptr, 1);
    log.print("k", "a");
    log.print("k", "b");
    CHECK(log.suppressed("k") == 1);
    log.finish(); // must not call the empty sink
}

TEST_CASE("GuestLog: from many threads at once exactly `listed` lines go out and the count is exact") {
    std::atomic<int> printed{0};
    std::vector<std::string> summary;
    {
        GuestLog log(
            [&](std::string_view l) {
                if (l.starts_with("..."))
                    summary.emplace_back(l);
                else
                    printed.fetch_add(1);
            },
            GuestLog::kListed);
        std::vector<std::thread> threads;
        for (int t = 0; t < 8; ++t)
            threads.emplace_back([&] {
                for (int i = 0; i < 5000; ++i) log.print("guest exception reports", "r");
            });
        for (auto& t : threads) t.join();
        CHECK(log.suppressed("guest exception reports") == 8 * 5000 - GuestLog::kListed);
    }
    CHECK(printed.load() == static_cast<int>(GuestLog::kListed));
    REQUIRE(summary.size() == 1);
    CHECK(summary[0] == "... and " + std::to_string(8 * 5000 - GuestLog::kListed) +
                            " more guest exception reports (suppressed)");
}
