// hv::mmu::RadixTable under racing threads, over both entry formats:
// concurrent ensure_leaf creates each table exactly once, and readers
// walking tables as a writer creates and rewrites them never see a torn or
// unzeroed entry.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <latch>
#include <random>
#include <set>
#include <thread>
#include <vector>

#include "mmu/base/frame_space.hpp"
#include "mmu/table/entry_format.hpp"
#include "mmu/table/radix_table.hpp"
#include "tests/support/radix_table_fixture.hpp"

using hv::mmu::EptFormat;
using hv::mmu::FrameCounters;
using hv::mmu::FrameSpace;
using hv::mmu::Perms;
using hv::mmu::X86PteFormat;
using namespace hv::mmu::test::radix_table;

TEST_CASE_TEMPLATE("RadixTable: racing ensure_leaf creates each table exactly once", F, EptFormat, X86PteFormat) {
    constexpr int kThreads = 8;
    // Overlapping work: every thread walks every address, in its own order.
    std::set<std::uint64_t> set;
    for (std::uint64_t region : {std::uint64_t{0}, k512G, 17 * k512G + 3 * k1G, kTop - k512G})
        for (std::uint64_t g = 0; g < 3; ++g)
            for (std::uint64_t m = 0; m < 6; ++m)
                for (std::uint64_t p = 0; p < 4; ++p) set.insert(region + g * k1G + m * 37 * k2M + p * 129 * k4K);
    const std::vector<std::uint64_t> addrs(set.begin(), set.end());
    const std::size_t needed = tables_needed(set);

    for (int round = 0; round < 8; ++round) {
        CAPTURE(round);
        FrameSpace fs(needed + kThreads * 4);
        auto t = make_table<F>(fs);
        std::latch start(kThreads);
        std::atomic<int> installed{0}, failed{0}, wrong{0};
        std::vector<std::thread> threads;
        for (int i = 0; i < kThreads; ++i) {
            threads.emplace_back([&, i] {
                std::vector<std::uint64_t> mine = addrs;
                std::shuffle(mine.begin(), mine.end(), std::mt19937_64(round * 100 + i));
                start.arrive_and_wait();
                for (std::uint64_t a : mine) {
                    auto slot = t.ensure_leaf(a);
                    if (!slot) {
                        failed.fetch_add(1);
                        continue;
                    }
                    // Everyone installs the same entry; exactly one CAS wins.
                    std::uint64_t expected = 0;
                    if (t.compare_exchange(*slot, expected, leaf_for<F>(a)))
                        installed.fetch_add(1);
                    else if (expected != leaf_for<F>(a))
                        wrong.fetch_add(1);
                }
            });
        }
        for (auto& th : threads) th.join();
        CHECK(failed.load() == 0);
        CHECK(wrong.load() == 0);
        CHECK(installed.load() == static_cast<int>(addrs.size()));
        CHECK(t.count_tables() == needed);
        const FrameCounters c = fs.counters();
        CHECK(c.in_use == needed); // losers' frames all went back
        CHECK(c.allocated - c.freed == c.in_use);
        for (std::uint64_t a : addrs) CHECK(t.lookup(a) == leaf_for<F>(a));
        t.destroy();
        CHECK(fs.counters().in_use == 0);
    }
}

TEST_CASE_TEMPLATE("RadixTable: concurrent readers never see a torn or unzeroed entry", F, EptFormat,
                   X86PteFormat) {
    FrameSpace fs(512);
    auto t = make_table<F>(fs);
    // Two values differing in both 32-bit halves: a torn read would match neither.
    const std::uint64_t va = F::make_leaf(0xFFFFF00000ull, Perms{.read = true, .write = true, .exec = true});
    const std::uint64_t vb = F::make_leaf(0x00000FFFFFull, Perms{.read = true});
    std::vector<std::uint64_t> addrs;
    for (int i = 0; i < 64; ++i) addrs.push_back(static_cast<std::uint64_t>(i) * (k1G + k2M + k4K) % kTop);
    std::atomic<bool> stop{false};
    std::atomic<int> bad{0};
    std::vector<std::thread> readers;
    for (int r = 0; r < 3; ++r) {
        readers.emplace_back([&] {
            while (!stop.load(std::memory_order_relaxed)) {
                for (std::uint64_t a : addrs) {
                    const std::uint64_t e = t.lookup(a); // walks tables as they are being created
                    if (e != 0 && e != va && e != vb) bad.fetch_add(1);
                }
                t.for_each_leaf(0, kTop, 0, [&](std::uint64_t, const auto& slot) {
                    const std::uint64_t e = t.load(slot);
                    if (e != 0 && e != va && e != vb) bad.fetch_add(1);
                });
            }
        });
    }
    std::thread writer([&] {
        for (int iter = 0; iter < 200; ++iter)
            for (std::uint64_t a : addrs) {
                auto slot = t.ensure_leaf(a);
                if (!slot) {
                    bad.fetch_add(1);
                    continue;
                }
                t.store(*slot, iter % 3 == 0 ? va : (iter % 3 == 1 ? vb : 0));
            }
        stop.store(true);
    });
    writer.join();
    for (auto& th : readers) th.join();
    CHECK(bad.load() == 0);
}
