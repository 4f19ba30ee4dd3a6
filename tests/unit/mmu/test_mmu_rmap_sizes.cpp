// The reverse map at every descriptor size the bench measures: inline ->
// one descriptor -> several -> back to inline, absent links, the on-demand
// links()/descriptors(), a model-checked random walk, and threads on
// disjoint frames and on one shared frame (run under TSan in CI).
#include "mmu/secondary/rmap.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <random>
#include <stdexcept>
#include <thread>
#include <vector>

using hv::mmu::BasicRmap;
using hv::mmu::Pfn;

TYPE_TO_STRING_AS("N6", BasicRmap<6>);
TYPE_TO_STRING_AS("N14", BasicRmap<14>);
TYPE_TO_STRING_AS("N30", BasicRmap<30>);
TYPE_TO_STRING_AS("N62", BasicRmap<62>);
#define HV_RMAP_SIZES BasicRmap<6>, BasicRmap<14>, BasicRmap<30>, BasicRmap<62>

namespace {

// Descriptors a frame with `links` links uses: none inline, then the first
// descriptor may be partly full and the rest are full.
template <class R>
std::size_t expected_descriptors(std::size_t links) {
    return links <= 1 ? 0 : (links + R::kEntries - 1) / R::kEntries;
}

std::vector<std::uint64_t> sorted(std::vector<std::uint64_t> v) {
    std::sort(v.begin(), v.end());
    return v;
}

} // namespace

TEST_CASE_TEMPLATE("rmap sizes: an empty map has no links and nothing to remove", R, HV_RMAP_SIZES) {
    R rmap(8);
    CHECK(rmap.frames() == 8);
    CHECK(rmap.links() == 0);
    CHECK(rmap.descriptors() == 0);
    CHECK(rmap.list(3).empty());
    CHECK(rmap.count(3) == 0);
    CHECK_FALSE(rmap.remove(3, 42));
    CHECK_FALSE(rmap.remove(8, 42)); // out of range
    CHECK(rmap.list(8).empty());
    CHECK(rmap.count(8) == 0);
    CHECK_THROWS_AS(rmap.add(8, 1), std::out_of_range);
}

TEST_CASE_TEMPLATE("rmap sizes: inline to one descriptor to several and back to inline", R, HV_RMAP_SIZES) {
    constexpr unsigned n = R::kEntries;
    const std::size_t most = 3 * n + 2; // four descriptors, the first partly full
    R rmap(4);
    std::vector<std::uint64_t> want;
    for (std::uint64_t i = 0; i < most; ++i) {
        const std::uint64_t gfn = 1000 + 7 * i;
        rmap.add(2, gfn);
        want.push_back(gfn);
        REQUIRE(rmap.count(2) == want.size());
        CHECK(sorted(rmap.list(2)) == sorted(want));
        CHECK(rmap.descriptors() == expected_descriptors<R>(want.size()));
        CHECK(rmap.links() == want.size());
    }
    CHECK(rmap.descriptors() == 4);
    CHECK(rmap.list(1).empty());
    CHECK(rmap.list(3).empty());

    SUBCASE("removing in insertion order") {}
    SUBCASE("removing newest first") { std::reverse(want.begin(), want.end()); }
    SUBCASE("removing in random order") { std::shuffle(want.begin(), want.end(), std::mt19937_64(n)); }
    std::vector<std::uint64_t> left = want;
    while (!left.empty()) {
        const std::uint64_t gfn = left.front();
        CHECK_FALSE(rmap.remove(2, gfn + 1)); // absent: odd offsets from the 7-step grid
        CHECK_FALSE(rmap.remove(1, gfn));     // present, but on another frame
        CHECK(rmap.remove(2, gfn));
        left.erase(left.begin());
        CHECK_FALSE(rmap.remove(2, gfn)); // already gone
        REQUIRE(rmap.count(2) == left.size());
        CHECK(sorted(rmap.list(2)) == sorted(left));
        CHECK(rmap.descriptors() == expected_descriptors<R>(left.size()));
        CHECK(rmap.links() == left.size());
    }
    CHECK(rmap.list(2).empty());
    // The frame is reusable: inline again, then a descriptor again.
    rmap.add(2, 5);
    CHECK(rmap.descriptors() == 0);
    rmap.add(2, 6);
    CHECK(rmap.descriptors() == 1);
    CHECK(sorted(rmap.list(2)) == std::vector<std::uint64_t>{5, 6});
}

TEST_CASE_TEMPLATE("rmap sizes: exactly one full descriptor, then one more link", R, HV_RMAP_SIZES) {
    constexpr unsigned n = R::kEntries;
    R rmap(1);
    for (std::uint64_t g = 0; g < n; ++g) rmap.add(0, g);
    CHECK(rmap.descriptors() == 1);
    rmap.add(0, n);
    CHECK(rmap.descriptors() == 2);
    CHECK(rmap.remove(0, n)); // the new descriptor empties and goes
    CHECK(rmap.descriptors() == 1);
    CHECK(rmap.remove(0, 0)); // from the full descriptor: the first fills its hole
    CHECK(rmap.descriptors() == 1);
    std::vector<std::uint64_t> want;
    for (std::uint64_t g = 1; g < n; ++g) want.push_back(g);
    CHECK(sorted(rmap.list(0)) == want);
    for (std::uint64_t g = 1; g + 1 < n; ++g) CHECK(rmap.remove(0, g));
    CHECK(rmap.descriptors() == 0); // one left: inline
    CHECK(rmap.list(0) == std::vector<std::uint64_t>{n - 1});
}

TEST_CASE_TEMPLATE("rmap sizes: the same link twice is held twice and removed once at a time", R, HV_RMAP_SIZES) {
    R rmap(2);
    rmap.add(1, 9);
    rmap.add(1, 9);
    CHECK(rmap.list(1) == std::vector<std::uint64_t>{9, 9});
    CHECK(rmap.remove(1, 9));
    CHECK(rmap.list(1) == std::vector<std::uint64_t>{9});
    CHECK(rmap.remove(1, 9));
    CHECK_FALSE(rmap.remove(1, 9));
    CHECK(rmap.links() == 0);
}

TEST_CASE_TEMPLATE("rmap sizes: links and descriptors summed over many frames on demand", R, HV_RMAP_SIZES) {
    constexpr Pfn frames = 64;
    R rmap(frames);
    std::size_t links = 0, descs = 0;
    for (Pfn p = 0; p < frames; ++p) {
        const std::size_t k = p % 5 == 0 ? 0 : p * 3; // some empty, some inline, some chained
        for (std::size_t i = 0; i < k; ++i) rmap.add(p, (p << 20) | i);
        links += k;
        descs += expected_descriptors<R>(k);
    }
    CHECK(rmap.links() == links);
    CHECK(rmap.descriptors() == descs);
    // Large gfns survive the inline tag and the lock bit; 2^62 and above do not fit.
    rmap.add(0, (std::uint64_t{1} << 61) + 3);
    CHECK(rmap.list(0) == std::vector<std::uint64_t>{(std::uint64_t{1} << 61) + 3});
    CHECK_THROWS_AS(rmap.add(0, std::uint64_t{1} << 62), std::out_of_range);
}

TEST_CASE_TEMPLATE("rmap sizes: random adds and removes agree with a model", R, HV_RMAP_SIZES) {
    constexpr Pfn frames = 6;
    R rmap(frames);
    std::vector<std::vector<std::uint64_t>> model(frames);
    std::mt19937_64 rng(R::kEntries * 77);
    for (int step = 0; step < 20000; ++step) {
        const Pfn p = rng() % frames;
        auto& m = model[p];
        // Grow more than shrink in the first half, then drain.
        const bool grow = rng() % 100 < (step < 10000 ? 60u : 35u);
        if (grow) {
            const std::uint64_t gfn = rng() % 4096;
            rmap.add(p, gfn);
            m.push_back(gfn);
        } else {
            const std::uint64_t gfn = !m.empty() && rng() % 4 ? m[rng() % m.size()] : rng() % 4096;
            const auto it = std::find(m.begin(), m.end(), gfn);
            CHECK(rmap.remove(p, gfn) == (it != m.end()));
            if (it != m.end()) m.erase(it);
        }
        if (step % 97 == 0) {
            std::size_t links = 0, descs = 0;
            for (Pfn f = 0; f < frames; ++f) {
                REQUIRE(sorted(rmap.list(f)) == sorted(model[f]));
                links += model[f].size();
                descs += expected_descriptors<R>(model[f].size());
            }
            REQUIRE(rmap.links() == links);
            REQUIRE(rmap.descriptors() == descs);
        }
    }
}

TEST_CASE_TEMPLATE("rmap sizes: threads on disjoint frames and on one shared frame", R, HV_RMAP_SIZES) {
    constexpr unsigned threads = 4;
    constexpr Pfn shared = 0;
    constexpr Pfn own_frames = 8; // per thread, after the shared frame
    constexpr int rounds = 2000;
    R rmap(1 + threads * own_frames);
    std::atomic<bool> go{false}, stop{false};
    std::atomic<int> failures{0}, audits{0}; // asserted after the join
    // An auditor reads the on-demand sums while the others work.
    // Its sums are per-frame snapshots taken at different times: only bounds hold.
    constexpr std::uint64_t most = std::uint64_t{threads} * rounds * (own_frames + 1);
    std::thread auditor([&] {
        do {
            if (rmap.links() > most || rmap.descriptors() > most) failures.fetch_add(1);
            audits.fetch_add(1);
        } while (!stop.load(std::memory_order_relaxed));
    });
    std::vector<std::thread> workers;
    for (unsigned t = 0; t < threads; ++t)
        workers.emplace_back([&, t] {
            const Pfn base = 1 + t * own_frames;
            while (!go.load()) std::this_thread::yield(); // start together, so they overlap
            for (int r = 0; r < rounds; ++r) {
                const std::uint64_t gfn = (std::uint64_t{t} << 32) | static_cast<std::uint64_t>(r);
                rmap.add(shared, gfn);
                for (Pfn f = 0; f < own_frames; ++f) rmap.add(base + f, gfn);
                // Keep the even rounds, drop the odd ones again.
                if (r % 2) {
                    int ok = rmap.remove(shared, gfn);
                    for (Pfn f = 0; f < own_frames; ++f) ok += rmap.remove(base + f, gfn);
                    ok += !rmap.remove(shared, gfn);
                    if (ok != static_cast<int>(own_frames) + 2) failures.fetch_add(1);
                }
            }
        });
    go.store(true);
    for (auto& w : workers) w.join();
    stop.store(true, std::memory_order_relaxed);
    auditor.join();
    CHECK(failures.load() == 0);
    CHECK(audits.load() > 0);

    constexpr std::size_t kept = rounds / 2;
    std::vector<std::uint64_t> want_shared;
    for (unsigned t = 0; t < threads; ++t) {
        std::vector<std::uint64_t> want;
        for (int r = 0; r < rounds; r += 2) want.push_back((std::uint64_t{t} << 32) | static_cast<std::uint64_t>(r));
        want_shared.insert(want_shared.end(), want.begin(), want.end());
        for (Pfn f = 0; f < own_frames; ++f) CHECK(sorted(rmap.list(1 + t * own_frames + f)) == want);
    }
    CHECK(sorted(rmap.list(shared)) == sorted(want_shared));
    CHECK(rmap.links() == kept * threads * (own_frames + 1));
    CHECK(rmap.descriptors() ==
          expected_descriptors<R>(kept * threads) + threads * own_frames * expected_descriptors<R>(kept));
}

TEST_CASE_TEMPLATE("rmap sizes: adds and removes with other writers excluded agree with readers that run meanwhile", R, HV_RMAP_SIZES) {
    // One writer (as a fault or a zap under the global lock is) adds and
    // removes the inline link of each frame with plain stores; two readers
    // list and count the same frames meanwhile. A reader sees the link or
    // no link, never anything else, and the writer's removes always find
    // their link (a reader never resurrects or hides one).
    constexpr Pfn frames = 16;
    constexpr int rounds = 3000;
    R rmap(frames);
    std::atomic<bool> stop{false};
    std::atomic<int> failures{0};
    std::vector<std::thread> readers;
    for (int t = 0; t < 2; ++t)
        readers.emplace_back([&] {
            do {
                for (Pfn p = 0; p < frames; ++p) {
                    const auto l = rmap.list(p);
                    if (l.size() > 1 || (l.size() == 1 && (l[0] & 0xffff) != p)) failures.fetch_add(1);
                    if (rmap.count(p) > 1) failures.fetch_add(1);
                }
            } while (!stop.load(std::memory_order_relaxed));
        });
    int missed = 0;
    for (int r = 0; r < rounds; ++r)
        for (Pfn p = 0; p < frames; ++p) {
            const std::uint64_t gfn = (static_cast<std::uint64_t>(r) << 16) | p;
            rmap.add(p, gfn, R::Writers::Excluded);
            if (!rmap.remove(p, gfn, R::Writers::Excluded)) ++missed;
            if (rmap.remove(p, gfn, R::Writers::Excluded)) ++missed; // gone: a second remove finds nothing
        }
    stop.store(true);
    for (auto& t : readers) t.join();
    CHECK(missed == 0);
    CHECK(failures.load() == 0);
    CHECK(rmap.links() == 0);
    // A chain is still built and removed under its lock when writers are excluded.
    rmap.add(3, 7, R::Writers::Excluded);
    rmap.add(3, 8, R::Writers::Excluded);
    rmap.add(3, 9, R::Writers::Excluded);
    CHECK(rmap.remove(3, 8, R::Writers::Excluded));
    CHECK(sorted(rmap.list(3)) == std::vector<std::uint64_t>{7, 9});
    CHECK(rmap.remove(3, 9, R::Writers::Excluded));
    CHECK(rmap.list(3) == std::vector<std::uint64_t>{7});
    CHECK(rmap.descriptors() == 0); // back to the inline form
}

TEST_CASE_TEMPLATE("rmap sizes: threads racing to add the first and second link of one frame keep them all", R, HV_RMAP_SIZES) {
    // The empty -> inline and inline -> descriptor transitions are
    // compare-exchanges that may lose to another thread: every link must
    // land anyway.
    constexpr int threads = 4, per = 500;
    constexpr Pfn frames = 8;
    R rmap(frames);
    std::atomic<bool> go{false};
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t)
        workers.emplace_back([&, t] {
            while (!go.load()) std::this_thread::yield();
            for (int i = 0; i < per; ++i)
                for (Pfn p = 0; p < frames; ++p) {
                    const std::uint64_t gfn = (static_cast<std::uint64_t>(t) << 32) | static_cast<std::uint64_t>(i);
                    rmap.add(p, gfn);
                    // Drop it again most of the time, so the frame keeps
                    // crossing the inline/descriptor boundary.
                    if (i % 4) rmap.remove(p, gfn);
                }
        });
    go.store(true);
    for (auto& w : workers) w.join();
    for (Pfn p = 0; p < frames; ++p) CHECK(rmap.count(p) == threads * per / 4);
    CHECK(rmap.links() == frames * threads * per / 4);
}
