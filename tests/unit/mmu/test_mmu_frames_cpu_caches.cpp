// hv::mmu::FrameSpace's per-CPU frame caches (allocate(cpu)): whole aligned
// chunks whose lines are the CPU's own, frames waiting in a cache, give_back,
// and 1024 CPUs taking from each other's caches. The rest is in
// test_mmu_frames.cpp.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdint>
#include <cstring>
#include <latch>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mmu/base/frame_space.hpp"
#include "tests/support/frame_space_fixture.hpp"
#include "tests/support/text_match.hpp"

using namespace hv::mmu;
using hv::test::contains;
using hv::test::message_of;
using namespace hv::mmu::test::frames;

TEST_CASE("FrameSpace: a CPU's frames come in whole aligned chunks whose lines are its own") {
    using hv::mmu::kFrameChunk;
    FrameSpace fs(1024);
    const auto shared = fs.allocate(); // the shared pool: frame 0
    REQUIRE(shared);
    CHECK(*shared == 0);
    CHECK_FALSE(fs.line_owner(*shared).has_value());
    // CPU 5's first allocation takes the next whole aligned chunk; the fresh
    // frames below it (1..63) go to the shared pool.
    const auto first = fs.allocate(5);
    REQUIRE(first);
    CHECK(*first == kFrameChunk);
    for (Pfn p = kFrameChunk; p < 2 * kFrameChunk; ++p) CHECK(fs.line_owner(p) == 5u);
    CHECK_FALSE(fs.line_owner(2 * kFrameChunk).has_value());
    FrameCounters c = fs.counters();
    CHECK(c.refills == 1);
    CHECK(c.cached == kFrameChunk - 1);
    CHECK(c.in_use == 2);
    CHECK(c.high_water == 1 + kFrameChunk); // frame 0 and the chunk left the pool
    check_balanced(c);
    // The rest of the chunk, in order, then the next chunk.
    for (Pfn p = kFrameChunk + 1; p < 2 * kFrameChunk; ++p) CHECK(fs.allocate(5) == p);
    CHECK(fs.allocate(5) == 2 * kFrameChunk);
    CHECK(fs.counters().refills == 2);
    // Another CPU gets a chunk of its own.
    CHECK(fs.allocate(7) == 3 * kFrameChunk);
    CHECK(fs.line_owner(3 * kFrameChunk + 9) == 7u);
    // The shared pool serves the frames skipped below CPU 5's chunk first.
    CHECK(fs.allocate() == 1);
    // A CPU index without a cache (kAnyCpu) is the shared pool too.
    CHECK(fs.allocate(FrameSpace::kAnyCpu) == 2);
    // Freeing one frame of a chunk makes its lines shared: the frame goes to
    // whoever allocates next.
    fs.free(kFrameChunk + 3);
    CHECK_FALSE(fs.line_owner(kFrameChunk).has_value());
    CHECK(fs.line_owner(2 * kFrameChunk) == 5u);
    check_balanced(fs.counters());
}

TEST_CASE("FrameSpace: a frame waiting in a CPU's cache is not allocated, and freeing it is a double free") {
    FrameSpace fs(256);
    const auto p = fs.allocate(0);
    REQUIRE(p);
    CHECK(fs.is_allocated(*p));
    CHECK_FALSE(fs.is_allocated(*p + 1)); // in CPU 0's cache
    CHECK(contains(message_of<std::logic_error>([&] { fs.free(*p + 1); }), "double free"));
    fs.free(*p);
    CHECK(contains(message_of<std::logic_error>([&] { fs.free(*p); }), "double free"));
    check_balanced(fs.counters());
}

TEST_CASE("FrameSpace: give_back returns a frame to its CPU's cache, zeroed again, and keeps the chunk its own") {
    FrameSpace fs(256);
    const auto p = fs.allocate(2);
    REQUIRE(p);
    std::memset(fs.bytes(*p).data(), 0x5a, kPage);
    fs.give_back(*p, 2);
    CHECK_FALSE(fs.is_allocated(*p));
    CHECK(fs.line_owner(*p) == 2u);
    FrameCounters c = fs.counters();
    CHECK(c.allocated == 1);
    CHECK(c.freed == 1);
    CHECK(c.in_use == 0);
    CHECK(c.cached == hv::mmu::kFrameChunk);
    const auto again = fs.allocate(2);
    REQUIRE(again);
    CHECK(*again == *p); // last in, first out
    CHECK(all_bytes(fs.bytes(*again), 0));
    CHECK(contains(message_of<std::logic_error>([&] { fs.give_back(*again + 1, 2); }), "double free"));
    // Without a cache for the CPU it is a plain free.
    fs.give_back(*again, 9);
    CHECK_FALSE(fs.line_owner(*again).has_value());
    check_balanced(fs.counters());
}

TEST_CASE("FrameSpace: 1024 CPUs allocating from their caches get exactly the capacity, taking from each other") {
    constexpr int kThreads = 1024;
    constexpr std::size_t kCapacity = 1000; // 15 whole chunks and 40 frames
    FrameSpace fs(kCapacity);
    std::latch start(kThreads), allocated(kThreads);
    std::atomic<std::uint64_t> successes{0};
    std::atomic<int> dirty{0};
    std::vector<std::vector<Pfn>> held(kThreads);
    std::vector<std::thread> threads;
    threads.reserve(kThreads);
    for (int t = 0; t < kThreads; ++t) {
        threads.emplace_back([&, t] {
            start.arrive_and_wait();
            for (int i = 0; i < 2; ++i)
                if (auto p = fs.allocate(static_cast<std::uint32_t>(t))) {
                    if (!all_bytes(fs.bytes(*p), 0)) dirty.fetch_add(1);
                    std::memset(fs.bytes(*p).data(), 0xee, kPage);
                    held[t].push_back(*p);
                }
            successes.fetch_add(held[t].size());
            allocated.arrive_and_wait();
            // Second round: everything freed, then each CPU allocates again
            // (the frames now come from the free stack, dirty, zeroed again).
            for (Pfn p : held[t]) fs.free(p);
            held[t].clear();
        });
    }
    for (auto& th : threads) th.join();
    CHECK(successes.load() == kCapacity);
    CHECK(dirty.load() == 0);
    FrameCounters c = fs.counters();
    CHECK(c.allocated == kCapacity);
    CHECK(c.failed == 2 * kThreads - kCapacity);
    CHECK(c.in_use == 0);
    CHECK(c.cached == 0); // every cached frame was taken by someone
    check_balanced(c);
    std::set<Pfn> again;
    for (int t = 0; t < 8; ++t)
        for (int i = 0; i < 100; ++i) {
            auto p = fs.allocate(static_cast<std::uint32_t>(t));
            REQUIRE(p);
            CHECK(all_bytes(fs.bytes(*p), 0));
            again.insert(*p);
        }
    CHECK(again.size() == 800);
    check_balanced(fs.counters());
}
