// hv::mmu::FrameSpace: geometry, zeroed allocation, exhaustion as a value,
// double-free and range detection, the non-owning (guest RAM) mode, balanced
// counters, and 1024 threads allocating at once.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <latch>
#include <memory>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "mmu/base/frame_space.hpp"
#include "tests/support/text_match.hpp"

using hv::mmu::FrameCounters;
using hv::mmu::FrameSpace;
using hv::mmu::kFrameSize;
using hv::mmu::Pfn;
using hv::test::contains;
using hv::test::message_of;

namespace {

bool all_bytes(std::span<const std::uint8_t> s, std::uint8_t v) {
    return std::all_of(s.begin(), s.end(), [v](std::uint8_t b) { return b == v; });
}

void check_balanced(const FrameCounters& c) {
    CHECK(c.allocated - c.freed == c.in_use);
    CHECK(c.high_water >= c.in_use);
}

// Page-aligned heap memory for the non-owning constructor.
struct AlignedBuffer {
    explicit AlignedBuffer(std::size_t bytes)
        : size(bytes), data(static_cast<std::uint8_t*>(std::aligned_alloc(4096, bytes))) {
        REQUIRE(data != nullptr);
    }
    ~AlignedBuffer() { std::free(data); }
    AlignedBuffer(const AlignedBuffer&) = delete;
    AlignedBuffer& operator=(const AlignedBuffer&) = delete;
    std::span<std::uint8_t> span() const { return {data, size}; }
    std::size_t size;
    std::uint8_t* data;
};

} // namespace

TEST_CASE("FrameSpace: owning geometry") {
    FrameSpace fs(16);
    CHECK(fs.frame_count() == 16);
    CHECK(fs.allocatable() == 16);
    CHECK(fs.first_allocatable() == 0);
    CHECK(fs.end_allocatable() == 16);
    CHECK(fs.contains(0));
    CHECK(fs.contains(15));
    CHECK_FALSE(fs.contains(16));
    CHECK_FALSE(fs.contains(UINT64_MAX));
    // Consecutive pfns are consecutive 4 KiB of one region.
    CHECK(fs.bytes(1).data() == fs.bytes(0).data() + kFrameSize);
    CHECK(fs.bytes(15).data() == fs.bytes(0).data() + 15 * kFrameSize);
    CHECK(reinterpret_cast<std::uintptr_t>(fs.bytes(0).data()) % 4096 == 0);
    CHECK(static_cast<void*>(fs.entries(3)) == static_cast<void*>(fs.bytes(3).data()));
    const FrameCounters c = fs.counters();
    CHECK(c.allocated == 0);
    CHECK(c.freed == 0);
    CHECK(c.failed == 0);
    CHECK(c.in_use == 0);
    CHECK(c.high_water == 0);
}

TEST_CASE("FrameSpace: zero frames or an unmappable size throw runtime_error") {
    CHECK(contains(message_of<std::runtime_error>([] { FrameSpace fs(0); }), "expected at least one frame, found 0"));
    // 2^40 frames = 4 PiB: more than the 47-bit user address space.
    const std::string msg = message_of<std::runtime_error>([] { FrameSpace fs(std::size_t{1} << 40); });
    CHECK(contains(msg, "cannot map 1099511627776 frames"));
    CHECK(contains(msg, "bytes): "));
    CHECK(contains(message_of<std::runtime_error>([] { FrameSpace fs(SIZE_MAX / 2); }), "overflow"));
}

TEST_CASE("FrameSpace: allocate hands out each frame once, then reports exhaustion") {
    FrameSpace fs(8);
    std::set<Pfn> got;
    for (int i = 0; i < 8; ++i) {
        auto p = fs.allocate();
        REQUIRE(p.has_value());
        CHECK(*p < 8);
        CHECK(fs.is_allocated(*p));
        got.insert(*p);
    }
    CHECK(got.size() == 8);
    CHECK_FALSE(fs.allocate().has_value());
    CHECK_FALSE(fs.allocate().has_value());
    FrameCounters c = fs.counters();
    CHECK(c.allocated == 8);
    CHECK(c.failed == 2);
    CHECK(c.in_use == 8);
    CHECK(c.high_water == 8);

    fs.free(5);
    CHECK_FALSE(fs.is_allocated(5));
    auto again = fs.allocate();
    REQUIRE(again.has_value());
    CHECK(*again == 5); // the only free frame
    c = fs.counters();
    CHECK(c.allocated == 9);
    CHECK(c.freed == 1);
    CHECK(c.in_use == 8);
    check_balanced(c);
    for (Pfn p : got) fs.free(p);
    c = fs.counters();
    CHECK(c.in_use == 0);
    CHECK(c.high_water == 8);
    check_balanced(c);
}

TEST_CASE("FrameSpace: a reused frame comes back zeroed") {
    FrameSpace fs(4);
    auto a = fs.allocate();
    REQUIRE(a.has_value());
    CHECK(all_bytes(fs.bytes(*a), 0));
    std::memset(fs.bytes(*a).data(), 0xA5, kFrameSize);
    fs.free(*a);
    auto b = fs.allocate();
    REQUIRE(b.has_value());
    CHECK(*b == *a); // last freed, first reused
    CHECK(all_bytes(fs.bytes(*b), 0));
}

TEST_CASE("FrameSpace: free detects double free and frames outside the allocatable range") {
    FrameSpace fs(4);
    auto a = fs.allocate();
    REQUIRE(a.has_value());
    fs.free(*a);
    const FrameCounters before = fs.counters();
    std::string msg = message_of<std::logic_error>([&] { fs.free(*a); });
    CHECK(contains(msg, "expected an allocated frame, found pfn 0x0 free already"));
    // Never allocated at all.
    msg = message_of<std::logic_error>([&] { fs.free(3); });
    CHECK(contains(msg, "found pfn 0x3 free already"));
    msg = message_of<std::logic_error>([&] { fs.free(4); });
    CHECK(contains(msg, "expected a pfn in the allocatable range [0x0, 0x4), found 0x4"));
    CHECK_THROWS_AS(fs.free(UINT64_MAX), std::logic_error);
    // A refused free changes nothing.
    const FrameCounters after = fs.counters();
    CHECK(after.freed == before.freed);
    CHECK(after.in_use == before.in_use);
}

TEST_CASE("FrameSpace: bytes and entries are bounds-checked") {
    FrameSpace fs(4);
    CHECK(contains(message_of<std::out_of_range>([&] { (void)fs.bytes(4); }),
                   "expected a pfn below 0x4 (the frame count), found 0x4"));
    CHECK(contains(message_of<std::out_of_range>([&] { (void)fs.entries(1000); }),
                   "expected a table pfn below 0x4 (the frame count), found 0x3e8"));
    CHECK(fs.bytes(3).size() == 4096);
    std::uint64_t* e = fs.entries(2);
    e[511] = 0x1122334455667788ull; // the last of 512 entries is the last 8 bytes of the frame
    CHECK(fs.bytes(2)[4095] == 0x11);
    CHECK(fs.bytes(2)[4088] == 0x88);
}

TEST_CASE("FrameSpace: over existing memory only the allocatable range is handed out, zeroed") {
    AlignedBuffer mem(8 * kFrameSize);
    std::memset(mem.data, 0xEE, mem.size);
    FrameSpace fs(mem.span(), 2, 6);
    CHECK(fs.frame_count() == 8);
    CHECK(fs.allocatable() == 4);
    CHECK(fs.first_allocatable() == 2);
    CHECK(fs.end_allocatable() == 6);
    CHECK(fs.contains(0));
    CHECK(fs.contains(7));
    CHECK_FALSE(fs.contains(8));
    // pfn N is memory offset N * 4096, allocatable or not.
    CHECK(fs.bytes(0).data() == mem.data);
    CHECK(fs.bytes(7).data() == mem.data + 7 * kFrameSize);

    std::set<Pfn> got;
    while (auto p = fs.allocate()) {
        got.insert(*p);
        CHECK(all_bytes(fs.bytes(*p), 0)); // someone else's memory: zeroed on the way out
    }
    CHECK(got == std::set<Pfn>{2, 3, 4, 5});
    CHECK(fs.counters().failed == 1);
    // Frames outside the range were never touched.
    for (Pfn p : {0, 1, 6, 7}) CHECK(all_bytes(fs.bytes(p), 0xEE));
    CHECK_THROWS_AS(fs.free(1), std::logic_error);
    CHECK_THROWS_AS(fs.free(6), std::logic_error);
    CHECK_FALSE(fs.is_allocated(1));
    for (Pfn p : got) fs.free(p);
    check_balanced(fs.counters());
    CHECK(fs.counters().in_use == 0);
}

TEST_CASE("FrameSpace: the non-owning constructor validates its arguments") {
    AlignedBuffer mem(8 * kFrameSize);
    CHECK(contains(message_of<std::invalid_argument>([&] { FrameSpace fs(std::span<std::uint8_t>(), 0, 1); }),
                   "expected non-empty memory"));
    CHECK(contains(message_of<std::invalid_argument>([&] { FrameSpace fs(mem.span().subspan(8, 4096), 0, 1); }),
                   "4 KiB aligned"));
    CHECK(contains(message_of<std::invalid_argument>([&] { FrameSpace fs(mem.span().first(4097), 0, 1); }),
                   "whole number of 4 KiB frames, found 0x1001 bytes"));
    CHECK(contains(message_of<std::invalid_argument>([&] { FrameSpace fs(mem.span(), 3, 3); }),
                   "expected first_allocatable < end_allocatable <= 0x8 (the frame count), found [0x3, 0x3)"));
    CHECK(contains(message_of<std::invalid_argument>([&] { FrameSpace fs(mem.span(), 5, 2); }), "found [0x5, 0x2)"));
    CHECK(contains(message_of<std::invalid_argument>([&] { FrameSpace fs(mem.span(), 0, 9); }), "found [0x0, 0x9)"));
    // The whole region is fine.
    FrameSpace whole(mem.span(), 0, 8);
    CHECK(whole.allocatable() == 8);
}

TEST_CASE("FrameSpace: high water and balance through an alloc/free sequence") {
    FrameSpace fs(32);
    std::vector<Pfn> held;
    std::uint64_t expected_high = 0;
    // Grow to 10, shrink to 3, grow to 20, drain: high water follows the peak.
    auto grow = [&](std::size_t to) {
        while (held.size() < to) {
            auto p = fs.allocate();
            REQUIRE(p.has_value());
            held.push_back(*p);
        }
        expected_high = std::max<std::uint64_t>(expected_high, held.size());
    };
    auto shrink = [&](std::size_t to) {
        while (held.size() > to) {
            fs.free(held.back());
            held.pop_back();
        }
    };
    grow(10);
    shrink(3);
    CHECK(fs.counters().high_water == 10);
    grow(20);
    shrink(0);
    const FrameCounters c = fs.counters();
    CHECK(c.high_water == 20);
    CHECK(c.high_water == expected_high);
    CHECK(c.allocated == 27);
    CHECK(c.freed == 27);
    CHECK(c.in_use == 0);
    check_balanced(c);
}

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
                std::memset(fs.bytes(*a).data(), (t % 255) + 1, kFrameSize);
                std::memcpy(fs.bytes(*a).data(), &t, sizeof t);
            }
            allocated.arrive_and_wait();
            for (Pfn p : mine) {
                int owner;
                std::memcpy(&owner, fs.bytes(p).data(), sizeof owner);
                if (owner != t || fs.bytes(p)[kFrameSize - 1] != (t % 255) + 1) duplicates.fetch_add(1);
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

// ---- Per-CPU frame caches (allocate(cpu)) ---------------------------------

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
    std::memset(fs.bytes(*p).data(), 0x5a, kFrameSize);
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
                    std::memset(fs.bytes(*p).data(), 0xee, kFrameSize);
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
