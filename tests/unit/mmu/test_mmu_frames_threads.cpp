// hv::mmu::FrameSpace under threads: 1024 threads allocating, checking,
// freeing and reallocating at once, and contended exhaustion handing out
// exactly the capacity. The rest is in test_mmu_frames.cpp.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <latch>
#include <set>
#include <thread>
#include <vector>

#include "mmu/base/frame_space.hpp"
#include "tests/support/frame_space_fixture.hpp"

using namespace hv::mmu;
using namespace hv::mmu::test::frames;

TEST_CASE("FrameSpace: 1024 threads allocate, check, free and reallocate concurrently") {
    constexpr int kThreads = 1024;
    constexpr int kPerThread = 4;
    FrameSpace fs(kThreads * kPerThread);
    std::latch start(kThreads), allocated(kThreads), freed(kThreads);
    std::atomic<int> duplicates{0}, dirty{0}, failures{0};
    std::vector<std::thread> threads;
    threads.reserve(kThreads);
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            start.arrive_and_wait();
            // Frames obtained; a failure is counted and the thread still
            // passes every barrier so the others do not wait forever.
            std::vector<Pfn> mine;
            for (int i = 0; i < kPerThread; ++i) {
                auto a = fs.allocate();
                if (!a) {
                    failures.fetch_add(1);
                    continue;
                }
                mine.push_back(*a);
                // Stamp the whole frame with this thread's id: a frame handed
                // to two threads shows the other's stamp after the barrier.
                std::memset(fs.bytes(*a).data(), (t % 255) + 1, kPage);
                std::memcpy(fs.bytes(*a).data(), &t, sizeof t);
            }
            allocated.arrive_and_wait();
            for (Pfn p : mine) {
                int owner;
                std::memcpy(&owner, fs.bytes(p).data(), sizeof owner);
                if (owner != t || fs.bytes(p)[kPage - 1] != (t % 255) + 1) duplicates.fetch_add(1);
            }
            for (Pfn p : mine) fs.free(p);
            mine.clear();
            freed.arrive_and_wait();
            // Second round: every frame was dirtied above and must come back zeroed.
            for (int i = 0; i < kPerThread; ++i) {
                auto a = fs.allocate();
                if (!a) {
                    failures.fetch_add(1);
                    continue;
                }
                mine.push_back(*a);
                if (!all_bytes(fs.bytes(*a), 0)) dirty.fetch_add(1);
            }
            for (Pfn p : mine) fs.free(p);
        });
    }
    for (auto& th : threads) th.join();
    CHECK(failures.load() == 0);
    CHECK(duplicates.load() == 0);
    CHECK(dirty.load() == 0);
    const FrameCounters c = fs.counters();
    CHECK(c.allocated == 2u * kThreads * kPerThread);
    CHECK(c.freed == 2u * kThreads * kPerThread);
    CHECK(c.in_use == 0);
    CHECK(c.failed == 0);
    CHECK(c.high_water == std::uint64_t{kThreads} * kPerThread); // everyone held 4 at the first barrier
    check_balanced(c);
}

TEST_CASE("FrameSpace: contended exhaustion hands out exactly the capacity") {
    constexpr int kThreads = 1024;
    constexpr std::size_t kCapacity = 1000;
    FrameSpace fs(kCapacity);
    std::latch start(kThreads);
    std::atomic<std::uint64_t> successes{0};
    std::vector<std::vector<Pfn>> held(kThreads);
    std::vector<std::thread> threads;
    threads.reserve(kThreads);
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            start.arrive_and_wait();
            for (int i = 0; i < 2; ++i)
                if (auto p = fs.allocate()) held[t].push_back(*p);
            successes.fetch_add(held[t].size());
        });
    }
    for (auto& th : threads) th.join();
    CHECK(successes.load() == kCapacity);
    std::set<Pfn> all;
    for (auto& v : held) all.insert(v.begin(), v.end());
    CHECK(all.size() == kCapacity);
    FrameCounters c = fs.counters();
    CHECK(c.allocated == kCapacity);
    CHECK(c.failed == 2 * kThreads - kCapacity);
    CHECK(c.in_use == kCapacity);
    CHECK(c.high_water == kCapacity);
    check_balanced(c);
    for (Pfn p : all) fs.free(p);
    c = fs.counters();
    CHECK(c.in_use == 0);
    check_balanced(c);
}
