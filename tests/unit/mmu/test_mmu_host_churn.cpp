// HostChurn on its own, over a small host region with no vCPUs: the unmap
// hooks, restoring protected pages, the quota, the seed and bad configs.
#include "mmu/soft/host_churn.hpp"
#include "mmu/base/units.hpp"
#include "tests/support/text_match.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

using namespace hv::mmu;
using hv::test::message_of;

namespace {
constexpr std::uint64_t kBase = 0x40000000;
constexpr std::uint64_t kPages = 16;

constexpr std::size_t idx(ChurnOp op) { return static_cast<std::size_t>(op); }

// A region of kPages, every page present and writable.
struct Region {
    FrameSpace frames{256};
    HostAddressSpace host{frames};
    Region() {
        host.map_anonymous({kBase, kBase + kPages * kPage}, true);
        for (std::uint64_t p = 0; p < kPages; ++p)
            REQUIRE(host.fault(kBase + p * kPage, Access::Write).status == HostFaultStatus::Mapped);
    }
};

ChurnConfig config(ChurnOp op, double rate) {
    ChurnConfig c;
    c.host_base = kBase;
    c.pages = kPages;
    c.rate[idx(op)] = rate;
    c.seed = 7;
    return c;
}

// Runs `churn` on a thread until done() holds (or 10 s pass: a stuck churn
// then fails the checks rather than hanging the suite), then stops it.
template <class Done>
ChurnCounters run_until(HostChurn& churn, Done&& done) {
    std::atomic<bool> stop{false};
    ChurnCounters out;
    std::thread t([&] { churn.run(stop, out); });
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (!done() && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    stop = true;
    t.join();
    return out;
}

ChurnCounters run_for(HostChurn& churn, std::chrono::milliseconds how_long) {
    const auto until = std::chrono::steady_clock::now() + how_long;
    return run_until(churn, [&] { return std::chrono::steady_clock::now() >= until; });
}

std::string error_of(const ChurnConfig& c) {
    FrameSpace frames{16};
    HostAddressSpace host{frames};
    return message_of<std::invalid_argument>([&] { HostChurn churn(host, c); }, "(no error)");
}

// splitmix64, written out again so the test pins the generator and the
// seed mixing (seed ^ 0xc0ffee) that keep old runs reproducible.
std::uint64_t splitmix64(std::uint64_t& s) {
    std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

} // namespace

TEST_CASE("host churn: unmap alone calls the hooks in pairs around each unmap, and the host counts them") {
    Region r;
    ChurnConfig c = config(ChurnOp::Unmap, 20000);
    c.min_ops = 60;
    std::vector<std::uint64_t> started(kPages), finished(kPages);
    std::vector<std::string> problems; // only the churn thread touches these until join
    c.before_unmap = [&](std::uint64_t p) {
        if (p >= kPages) return problems.push_back("before_unmap: page " + std::to_string(p) + " outside the region");
        if (started[p] != finished[p]) problems.push_back("before_unmap: page " + std::to_string(p) + " twice");
        ++started[p];
        // Fault the page back in so every unmap has something to remove.
        if (r.host.fault(kBase + p * kPage, Access::Write).status != HostFaultStatus::Mapped)
            problems.push_back("before_unmap: page " + std::to_string(p) + " did not fault in");
    };
    c.after_unmap = [&](std::uint64_t p) {
        if (p >= kPages) return problems.push_back("after_unmap: page " + std::to_string(p) + " outside the region");
        if (started[p] != finished[p] + 1)
            problems.push_back("after_unmap: page " + std::to_string(p) + " without a matching before_unmap");
        if (r.host.lookup(kBase + p * kPage))
            problems.push_back("after_unmap: page " + std::to_string(p) + " is still present");
        ++finished[p];
    };
    const std::uint64_t unmapped_before = r.host.counters().unmapped;
    HostChurn churn(r.host, c);
    CHECK(churn.enabled());
    const ChurnCounters out = run_until(churn, [&] { return churn.quota_met(); });

    for (const auto& p : problems) FAIL_CHECK(p);
    const std::uint64_t unmaps = out.attempted[idx(ChurnOp::Unmap)];
    CHECK(unmaps >= 60);
    CHECK(out.done[idx(ChurnOp::Unmap)] == unmaps);
    CHECK(r.host.counters().unmapped - unmapped_before == unmaps);
    std::uint64_t pairs = 0;
    for (std::uint64_t p = 0; p < kPages; ++p) {
        CHECK(started[p] == finished[p]);
        pairs += finished[p];
    }
    CHECK(pairs == unmaps);
    for (std::size_t op = 0; op < kChurnOps; ++op)
        if (op != idx(ChurnOp::Unmap)) CHECK(out.attempted[op] == 0);
}

TEST_CASE("host churn: protect at a high rate leaves no page read-only after run returns") {
    Region r;
    ChurnConfig c = config(ChurnOp::Protect, 50000);
    c.protect_hold = std::chrono::seconds(30); // longer than the run: only the end of run() can restore them
    c.min_ops = 50;
    HostChurn churn(r.host, c);
    bool read_only_seen = false;
    const ChurnCounters out = run_until(churn, [&] {
        if (!churn.quota_met()) return false;
        for (std::uint64_t p = 0; p < kPages; ++p) {
            const auto t = r.host.lookup(kBase + p * kPage);
            read_only_seen = read_only_seen || (t && !t->writable);
        }
        return true;
    });
    CHECK(read_only_seen);
    CHECK(out.attempted[idx(ChurnOp::Protect)] >= 50);
    CHECK(out.done[idx(ChurnOp::Protect)] > 0);
    for (std::uint64_t p = 0; p < kPages; ++p) {
        CAPTURE(p);
        const auto t = r.host.lookup(kBase + p * kPage);
        REQUIRE(t);
        CHECK(t->writable);
    }
}

TEST_CASE("host churn: quota_met turns true only once every enabled op reached min_ops") {
    Region r;
    ChurnConfig c = config(ChurnOp::Migrate, 20000);
    c.rate[idx(ChurnOp::Age)] = 20000;
    c.min_ops = 40;
    HostChurn churn(r.host, c);
    CHECK_FALSE(churn.quota_met());
    const ChurnCounters out = run_until(churn, [&] { return churn.quota_met(); });
    CHECK(churn.quota_met());
    CHECK(out.attempted[idx(ChurnOp::Migrate)] >= 40);
    CHECK(out.attempted[idx(ChurnOp::Age)] >= 40);
    CHECK(out.done[idx(ChurnOp::Migrate)] > 0); // every page is present: migrations succeed
    CHECK(out.attempted[idx(ChurnOp::Unmap)] == 0);

    // One slow kind holds the quota back however fast the others go: swap's
    // first operation is at once, its second 1000 s later.
    ChurnConfig slow = config(ChurnOp::Migrate, 20000);
    slow.rate[idx(ChurnOp::Swap)] = 0.001;
    slow.min_ops = 2;
    HostChurn held(r.host, slow);
    const ChurnCounters held_out = run_for(held, std::chrono::milliseconds(30));
    CHECK(held_out.attempted[idx(ChurnOp::Swap)] == 1);
    CHECK_FALSE(held.quota_met());
}

TEST_CASE("host churn: without a quota or an enabled op, quota_met holds from the start") {
    Region r;
    HostChurn no_quota(r.host, config(ChurnOp::Merge, 1000));
    CHECK(no_quota.enabled());
    CHECK(no_quota.quota_met());

    ChurnConfig idle = config(ChurnOp::Merge, 0);
    idle.min_ops = 100;
    HostChurn nothing(r.host, idle);
    CHECK_FALSE(nothing.enabled());
    CHECK(nothing.quota_met());
    const ChurnCounters out = run_for(nothing, std::chrono::milliseconds(10)); // only waits for stop
    for (std::size_t op = 0; op < kChurnOps; ++op) CHECK(out.attempted[op] == 0);
}

TEST_CASE("host churn: the seed picks the pages as before the loop moved, and a second run adds its counts") {
    Region r;
    ChurnConfig c = config(ChurnOp::Unmap, 20000);
    c.seed = 12345;
    c.min_ops = 20;
    std::vector<std::uint64_t> pages;
    c.before_unmap = [&](std::uint64_t p) { pages.push_back(p); };
    HostChurn churn(r.host, c);
    ChurnCounters out = run_until(churn, [&] { return churn.quota_met(); });
    REQUIRE(pages.size() >= 20);
    std::uint64_t s = c.seed ^ 0xc0ffee;
    for (std::size_t i = 0; i < 20; ++i) {
        CAPTURE(i);
        CHECK(pages[i] == splitmix64(s) % kPages);
    }

    // A second run starts its schedule afresh and adds to the same counters.
    const std::uint64_t first = out.attempted[idx(ChurnOp::Unmap)];
    std::atomic<bool> stop{true}; // stop at once: the first operation is due at t = 0, but the loop checks first
    churn.run(stop, out);
    CHECK(out.attempted[idx(ChurnOp::Unmap)] == first);
    const ChurnCounters more = run_for(churn, std::chrono::milliseconds(10));
    CHECK(more.attempted[idx(ChurnOp::Unmap)] >= 1);
}

TEST_CASE("host churn: a config without pages, with a negative, NaN or infinite rate, or unaligned is rejected") {
    ChurnConfig c = config(ChurnOp::Migrate, 100);
    c.pages = 0;
    CHECK(error_of(c) == "HostChurn: expected a region of at least 1 page, got 0 pages");

    c = config(ChurnOp::Unmap, -1);
    CHECK(error_of(c) == "HostChurn: expected a finite unmap rate >= 0 operations per second, got -1");

    c = config(ChurnOp::Age, std::nan(""));
    const std::string nan_error = error_of(c);
    CHECK(nan_error.find("expected a finite age rate >= 0") != std::string::npos);
    CHECK(nan_error.find("nan") != std::string::npos);

    c = config(ChurnOp::Swap, std::numeric_limits<double>::infinity());
    CHECK(error_of(c) == "HostChurn: expected a finite swap rate >= 0 operations per second, got inf");

    c = config(ChurnOp::Migrate, 100);
    c.host_base = kBase + 1;
    CHECK(error_of(c) == "HostChurn: expected a 4 KiB aligned host_base, got 0x40000001");

    c = config(ChurnOp::Migrate, 100);
    c.pages = std::numeric_limits<std::uint64_t>::max() / kPage;
    CHECK(error_of(c).find("expected the region to end inside the address space") != std::string::npos);

    c = config(ChurnOp::Protect, 100);
    c.protect_hold = std::chrono::nanoseconds(-1);
    CHECK(error_of(c) == "HostChurn: expected protect_hold >= 0, got -1 ns");

    CHECK(error_of(config(ChurnOp::Protect, 100)) == "(no error)");
}

// ---------------------------------------------------------------------------
// pause() / resume(): a guest's coherence check holds the churn still for a
// while, but must not be able to stop it.

namespace {

// An unmap churn on its own thread whose unmaps can be counted while it runs.
struct WatchedChurn {
    Region r;
    std::atomic<std::uint64_t> begun{0}, ended{0};
    HostChurn churn;
    std::atomic<bool> stop{false};
    ChurnCounters out;
    std::thread thread;

    WatchedChurn() : churn(r.host, watched()) {}
    ~WatchedChurn() {
        if (thread.joinable()) finish();
    }
    ChurnConfig watched() {
        ChurnConfig c = config(ChurnOp::Unmap, 20000);
        c.before_unmap = [this](std::uint64_t) { begun.fetch_add(1); };
        c.after_unmap = [this](std::uint64_t) { ended.fetch_add(1); };
        return c;
    }
    void start() {
        thread = std::thread([this] { churn.run(stop, out); });
    }
    void finish() {
        stop = true;
        thread.join();
    }
    // Whether more than n unmaps began within 10 s.
    bool begins_past(std::uint64_t n) {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (begun.load() <= n && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return begun.load() > n;
    }
};

void sleep_ms(int ms) { std::this_thread::sleep_for(std::chrono::milliseconds(ms)); }

} // namespace

TEST_CASE("host churn: pause() holds run() between two operations until resume()") {
    WatchedChurn w;
    w.start();
    REQUIRE(w.begins_past(0));
    w.churn.pause();
    const std::uint64_t held_at = w.begun.load();
    CHECK(w.ended.load() == held_at); // no unmap half done while it holds
    sleep_ms(50);                      // 1000 unmaps due at 20000/s
    CHECK(w.begun.load() == held_at);
    w.churn.resume();
    CHECK(w.begins_past(held_at));
    w.finish();
    CHECK(w.out.attempted[idx(ChurnOp::Unmap)] == w.begun.load());
}

TEST_CASE("host churn: after a resume() run() makes a pass before the next pause() holds it, so pausing cannot starve it") {
    WatchedChurn w;
    w.start();
    REQUIRE(w.begins_past(0));
    for (int i = 0; i < 50; ++i) {
        CAPTURE(i);
        w.churn.pause();
        const std::uint64_t held_at = w.begun.load();
        sleep_ms(2); // unmaps fall due while it holds
        w.churn.resume();
        w.churn.pause(); // at once: returns only after the pass that was owed
        CHECK(w.begun.load() > held_at);
        w.churn.resume();
    }
}

TEST_CASE("host churn: a pause() before run() starts holds it before its first operation") {
    WatchedChurn w;
    w.churn.pause(); // nothing runs yet: returns at once
    w.start();
    sleep_ms(50);
    CHECK(w.begun.load() == 0);
    w.churn.resume();
    CHECK(w.begins_past(0));
}

TEST_CASE("host churn: pauses nest, and run() goes on only after the last resume()") {
    WatchedChurn w;
    w.start();
    REQUIRE(w.begins_past(0));
    w.churn.pause();
    w.churn.pause();
    const std::uint64_t held_at = w.begun.load();
    w.churn.resume();
    sleep_ms(50);
    CHECK(w.begun.load() == held_at);
    w.churn.resume();
    CHECK(w.begins_past(held_at));
    w.churn.resume(); // one too many: ignored
    w.churn.pause();
    const std::uint64_t again = w.begun.load();
    sleep_ms(20);
    CHECK(w.begun.load() == again);
    w.churn.resume();
}

TEST_CASE("host churn: stop ends a paused run(), and pause() on a churn that is not running returns at once") {
    WatchedChurn w;
    w.start();
    REQUIRE(w.begins_past(0));
    w.churn.pause();
    w.finish(); // joins: the held run() must see `stop`
    CHECK(w.out.attempted[idx(ChurnOp::Unmap)] == w.begun.load());
    w.churn.resume();
    w.churn.pause();
    w.churn.resume();
}
