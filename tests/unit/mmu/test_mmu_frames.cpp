// hv::mmu::FrameSpace on one thread: geometry, zeroed allocation, exhaustion
// as a value, double-free and range detection, the non-owning (guest RAM)
// mode and balanced counters. Threads are in test_mmu_frames_threads.cpp,
// the per-CPU frame caches in test_mmu_frames_cpu_caches.cpp.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <vector>

#include "mmu/base/frame_space.hpp"
#include "tests/support/frame_space_fixture.hpp"
#include "tests/support/text_match.hpp"

using namespace hv::mmu;
using hv::test::contains;
using hv::test::message_of;
using namespace hv::mmu::test::frames;

namespace {

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
    CHECK(fs.bytes(1).data() == fs.bytes(0).data() + kPage);
    CHECK(fs.bytes(15).data() == fs.bytes(0).data() + 15 * kPage);
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
    std::memset(fs.bytes(*a).data(), 0xA5, kPage);
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
    AlignedBuffer mem(8 * kPage);
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
    CHECK(fs.bytes(7).data() == mem.data + 7 * kPage);

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
    AlignedBuffer mem(8 * kPage);
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
