// hv::mmu::RadixTable point walks over both entry formats: a root created
// and freed, map/find/unmap at level boundaries and the top of the 48-bit
// space, hand-computed indices, intermediate tables created exactly once,
// exhaustion that leaks nothing, addresses outside 48 bits, large leaves,
// move-only ownership, and a dense table that balances the frame space.
// Range walks are in test_mmu_radix_table_range.cpp, racing threads in
// test_mmu_radix_table_concurrency.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "mmu/base/frame_space.hpp"
#include "mmu/table/entry_format.hpp"
#include "mmu/table/radix_table.hpp"
#include "tests/support/radix_table_fixture.hpp"
#include "tests/support/text_match.hpp"

using hv::mmu::EptFormat;
using hv::mmu::FrameCounters;
using hv::mmu::FrameSpace;
using hv::mmu::Perms;
using hv::mmu::Pfn;
using hv::mmu::RadixTable;
using hv::mmu::WalkStatus;
using hv::mmu::X86PteFormat;
using namespace hv::mmu::test::radix_table;
using hv::test::contains;
using hv::test::message_of;

TEST_CASE_TEMPLATE("RadixTable: create allocates one zeroed root and destroy frees it", F, EptFormat, X86PteFormat) {
    FrameSpace fs(8);
    {
        auto t = make_table<F>(fs);
        CHECK(t.valid());
        CHECK(fs.is_allocated(t.root()));
        CHECK(t.count_tables() == 1);
        CHECK(fs.counters().in_use == 1);
        for (unsigned i = 0; i < 512; ++i) CHECK(fs.entries(t.root())[i] == 0);
        CHECK(&t.frames() == &fs);
    }
    CHECK(fs.counters().in_use == 0);
    check_balanced(fs);

    // No frame for the root: a value, not a crash.
    FrameSpace one(1);
    auto held = one.allocate();
    REQUIRE(held.has_value());
    CHECK_FALSE(RadixTable<F>::create(one).has_value());
    CHECK(one.counters().failed == 1);
    one.free(*held);
}

TEST_CASE_TEMPLATE("RadixTable: map, find and unmap at level boundaries and the top of 48 bits", F, EptFormat,
                   X86PteFormat) {
    FrameSpace fs(256);
    auto t = make_table<F>(fs);
    const auto addrs = boundary_addresses();
    for (std::uint64_t a : addrs) REQUIRE(t.map(a, leaf_for<F>(a)));
    const std::set<std::uint64_t> set(addrs.begin(), addrs.end());
    CHECK(t.count_tables() == tables_needed(set));
    CHECK(fs.counters().in_use == tables_needed(set));

    for (std::uint64_t a : addrs) {
        CAPTURE(a);
        auto slot = t.find_leaf(a);
        REQUIRE(slot.has_value());
        CHECK(t.load(*slot) == leaf_for<F>(a));
        CHECK(t.lookup(a) == leaf_for<F>(a));
        CHECK(t.lookup(a + 0xFFF) == leaf_for<F>(a)); // the offset bits do not matter
        // Index bits 20:12, and the slot points into its leaf table.
        CHECK(slot->index == ((a >> 12) & 511));
        CHECK(slot->level == 1);
        CHECK(slot->entry == fs.entries(slot->table) + slot->index);
        // ensure_leaf on a mapped address finds the same slot and allocates nothing.
        const auto before = fs.counters().allocated;
        auto again = t.ensure_leaf(a);
        REQUIRE(again.has_value());
        CHECK(again->entry == slot->entry);
        CHECK(fs.counters().allocated == before);
    }
    // Neighbours that were not mapped read as empty.
    for (std::uint64_t a : {k4K * 2, k2M + 2 * k4K, k1G + k4K, k512G + k4K, kLastPage - k4K})
        CHECK(t.lookup(a) == 0);

    for (std::uint64_t a : addrs) CHECK(t.unmap(a) == leaf_for<F>(a));
    for (std::uint64_t a : addrs) CHECK(t.lookup(a) == 0);
    CHECK(t.unmap(k4K * 3) == 0);                // leaf table exists, entry empty
    CHECK(t.unmap(77 * k512G) == 0);             // no tables at all
    CHECK(t.count_tables() == tables_needed(set)); // unmap frees no tables
}

TEST_CASE_TEMPLATE("RadixTable: hand-computed indices at every level", F, EptFormat, X86PteFormat) {
    FrameSpace fs(64);
    auto t = make_table<F>(fs);
    // Follows the entries by hand: index i of each level, pfn from the entry.
    auto manual = [&](std::initializer_list<unsigned> idx) {
        Pfn table = t.root();
        std::uint64_t e = 0;
        unsigned level = 4;
        for (unsigned i : idx) {
            e = fs.entries(table)[i];
            if (level-- > 1) {
                REQUIRE(F::present(e));
                table = F::pfn(e);
            }
        }
        return e;
    };
    // 0xFFFFFFFFF000: bits 47:12 all ones -> index 511 at every level.
    // 0x8000000000 (512 GiB) = bit 39 -> PML4 1, then 0, 0, 0.
    // 0x40000000 (1 GiB) = bit 30 -> 0, PDPT 1, 0, 0.
    // 0x200000 (2 MiB) = bit 21 -> 0, 0, PD 1, 0.
    // 0x123456789000 = 0x24 << 39 | 0xD1 << 30 | 0xB3 << 21 | 0x189 << 12:
    //   0x24 * 0x8000000000 = 0x120000000000, rest 0x3456789000;
    //   0xD1 * 0x40000000 = 0x3440000000, rest 0x16789000;
    //   0xB3 * 0x200000 = 0x16600000, rest 0x189000 -> PT index 0x189.
    REQUIRE(t.map(0xFFFFFFFFF000ull, leaf_for<F>(1)));
    REQUIRE(t.map(0x8000000000ull, leaf_for<F>(2)));
    REQUIRE(t.map(0x40000000ull, leaf_for<F>(3)));
    REQUIRE(t.map(0x200000ull, leaf_for<F>(4)));
    REQUIRE(t.map(0x123456789000ull, leaf_for<F>(5)));
    CHECK(manual({511, 511, 511, 511}) == leaf_for<F>(1));
    CHECK(manual({1, 0, 0, 0}) == leaf_for<F>(2));
    CHECK(manual({0, 1, 0, 0}) == leaf_for<F>(3));
    CHECK(manual({0, 0, 1, 0}) == leaf_for<F>(4));
    CHECK(manual({0x24, 0xD1, 0xB3, 0x189}) == leaf_for<F>(5));
    // Intermediate entries are the format's table entries.
    const std::uint64_t root_e = fs.entries(t.root())[0x24];
    CHECK(root_e == F::make_table(F::pfn(root_e)));
}

TEST_CASE_TEMPLATE("RadixTable: intermediate tables are created once", F, EptFormat, X86PteFormat) {
    FrameSpace fs(64);
    auto t = make_table<F>(fs);
    // All 512 pages of the first 2 MiB: root + PDPT + PD + one PT.
    for (std::uint64_t a = 0; a < k2M; a += k4K) REQUIRE(t.map(a, leaf_for<F>(a)));
    CHECK(t.count_tables() == 4);
    CHECK(fs.counters().in_use == 4);
    // The next 2 MiB: one more PT.
    REQUIRE(t.map(k2M, leaf_for<F>(k2M)));
    CHECK(t.count_tables() == 5);
    // The next 1 GiB: a PD and a PT.
    REQUIRE(t.map(k1G, leaf_for<F>(k1G)));
    CHECK(t.count_tables() == 7);
    // The next 512 GiB: a PDPT, a PD and a PT.
    REQUIRE(t.map(k512G, leaf_for<F>(k512G)));
    CHECK(t.count_tables() == 10);
    CHECK(fs.counters().in_use == 10);
    CHECK(fs.counters().freed == 0); // no table was built twice
    // Walk statuses for what is missing: the slot is where a table would go.
    auto r = t.walk(2 * k512G);
    CHECK(r.status == WalkStatus::MissingTable);
    CHECK(r.slot.level == 4);
    CHECK(r.slot.index == 2);
    CHECK(r.slot.table == t.root());
    r = t.walk(2 * k1G);
    CHECK(r.status == WalkStatus::MissingTable);
    CHECK(r.slot.level == 3);
    CHECK(r.slot.index == 2);
    r = t.walk(2 * k2M);
    CHECK(r.status == WalkStatus::MissingTable);
    CHECK(r.slot.level == 2);
    CHECK(r.slot.index == 2);
    CHECK_FALSE(t.find_leaf(2 * k2M).has_value());
    CHECK(std::string(to_string(WalkStatus::MissingTable)) == "missing-table");
}

TEST_CASE_TEMPLATE("RadixTable: exhaustion in the middle of ensure_leaf leaks nothing", F, EptFormat,
                   X86PteFormat) {
    // With c frames: the root takes one, the walk to a new address needs 3
    // more (PDPT, PD, PT). It stops at the level whose table it could not get.
    for (std::size_t c = 1; c <= 5; ++c) {
        CAPTURE(c);
        FrameSpace fs(c);
        {
            auto t = make_table<F>(fs);
            const std::uint64_t a = 5 * k512G + 6 * k1G + 7 * k2M + 8 * k4K;
            auto r = t.walk_or_create(a);
            if (c < 4) {
                CHECK(r.status == WalkStatus::OutOfFrames);
                CHECK(r.slot.level == 4 - (c - 1)); // c = 1: at the root (level 4), 2: level 3, 3: level 2
                CHECK_FALSE(t.ensure_leaf(a).has_value());
                CHECK_FALSE(t.map(a, leaf_for<F>(a)));
                CHECK(fs.counters().failed >= 1);
            } else {
                CHECK(r.status == WalkStatus::Found);
            }
            // Every frame in use is a table of the tree: nothing dangling.
            CHECK(t.count_tables() == std::min<std::size_t>(c, 4));
            CHECK(fs.counters().in_use == t.count_tables());
            check_balanced(fs);
        }
        const FrameCounters after = fs.counters();
        CHECK(after.in_use == 0);
        CHECK(after.allocated == after.freed);
    }
    // Exhaustion after partial success leaves the tree usable: with 3 free
    // frames a second walk into the same PD needs only its PT.
    FrameSpace fs(4);
    auto t = make_table<F>(fs);
    auto hog = fs.allocate(); // leave 2 for the walk below
    REQUIRE(hog.has_value());
    CHECK(t.walk_or_create(k2M).status == WalkStatus::OutOfFrames); // PDPT and PD linked, no PT
    CHECK(t.count_tables() == 3);
    fs.free(*hog);
    CHECK(t.walk_or_create(k2M).status == WalkStatus::Found); // reuses the linked PDPT and PD
    CHECK(t.count_tables() == 4);
    t.destroy();
    CHECK(fs.counters().in_use == 0);
    check_balanced(fs);
}

TEST_CASE_TEMPLATE("RadixTable: addresses and ranges outside 48 bits are refused", F, EptFormat, X86PteFormat) {
    FrameSpace fs(8);
    auto t = make_table<F>(fs);
    CHECK(contains(message_of<std::out_of_range>([&] { (void)t.walk(kTop); }),
                   "RadixTable<" + std::string(F::name) +
                       ">::walk: expected an address below 0x1000000000000 (48 bits), found 0x1000000000000"));
    CHECK_THROWS_AS((void)t.ensure_leaf(UINT64_MAX), std::out_of_range);
    CHECK_THROWS_AS((void)t.map(0xFFFF800000000000ull, 1), std::out_of_range); // not sign-extended here
    CHECK(contains(message_of<std::out_of_range>([&] { t.for_each_leaf(8, 4, 0, [](auto, const auto&) {}); }),
                   "for_each_leaf: expected start <= end <= 0x1000000000000, found [0x8, 0x4)"));
    CHECK_THROWS_AS(t.for_each_leaf(0, kTop + 1, 0, [](auto, const auto&) {}), std::out_of_range);
    CHECK_THROWS_AS(t.for_each_leaf_table(0, kTop + k4K, [](auto, auto) {}), std::out_of_range);
    CHECK_THROWS_AS(t.free_empty_tables(k4K, 0), std::out_of_range);
    CHECK(fs.counters().in_use == 1);
    // An empty range visits nothing and is finished at once.
    int n = 0;
    CHECK(t.for_each_leaf(k2M, k2M, 0, [&](auto, const auto&) { ++n; }) == k2M);
    CHECK(n == 0);
}

TEST_CASE_TEMPLATE("RadixTable: large leaves are seen, not descended into", F, EptFormat, X86PteFormat) {
    FrameSpace fs(64);
    auto t = make_table<F>(fs);
    REQUIRE(t.map(k1G, leaf_for<F>(k1G))); // builds the PD for [1 GiB, 2 GiB)
    auto r = t.walk(k1G + k2M);
    REQUIRE(r.status == WalkStatus::MissingTable);
    REQUIRE(r.slot.level == 2);
    // A 2 MiB leaf at 1 GiB + 2 MiB, pointing at memory outside the frame
    // space: if anything took it for a table (or freed it), it would throw.
    const Pfn big = 0x7654200; // multiple of 512
    const std::uint64_t large = F::make_leaf(big, Perms{.read = true, .write = true}, true);
    t.store(r.slot, large);

    const std::uint64_t inside = k1G + k2M + 0x5000;
    r = t.walk(inside);
    CHECK(r.status == WalkStatus::LargeLeaf);
    CHECK(r.slot.level == 2);
    CHECK(r.slot.index == 1);
    CHECK(t.load(r.slot) == large);
    const auto allocated = fs.counters().allocated;
    CHECK_FALSE(t.find_leaf(inside).has_value());
    CHECK(t.walk_or_create(inside).status == WalkStatus::LargeLeaf);
    CHECK_FALSE(t.ensure_leaf(inside).has_value());
    CHECK_FALSE(t.map(inside, leaf_for<F>(inside)));
    CHECK(fs.counters().allocated == allocated);
    CHECK(t.lookup(inside) == 0);
    CHECK(contains(message_of<std::logic_error>([&] { t.unmap(inside); }), "found a large leaf"));

    // Visited once, at its own 2 MiB-aligned address, even from inside it.
    std::vector<std::pair<std::uint64_t, unsigned>> seen;
    auto collect = [&](std::uint64_t addr, const auto& slot) { seen.push_back({addr, slot.level}); };
    CHECK(t.for_each_leaf(k1G, 2 * k1G, 0, collect) == 2 * k1G);
    CHECK(seen == std::vector<std::pair<std::uint64_t, unsigned>>{{k1G, 1}, {k1G + k2M, 2}});
    seen.clear();
    CHECK(t.for_each_leaf(inside, 2 * k1G, 1, collect) == k1G + 2 * k2M); // resume past the whole 2 MiB
    CHECK(seen == std::vector<std::pair<std::uint64_t, unsigned>>{{k1G + k2M, 2}});
    seen.clear();
    CHECK(t.for_each_leaf(inside, inside + k4K, 1, collect) == inside + k4K); // resume clamps to end
    CHECK(seen.size() == 1);
    // Not a leaf table; not freed or counted as a table.
    std::size_t tables = t.for_each_leaf_table(k1G, 2 * k1G, [](Pfn, std::uint64_t) {});
    CHECK(tables == 1);
    CHECK(t.count_tables() == 4);
    t.unmap(k1G);
    CHECK(t.free_empty_tables(k1G, 2 * k1G) == 1); // the PT at 1 GiB; the PD keeps the large leaf
    t.destroy();
    CHECK(fs.counters().in_use == 0);
    check_balanced(fs);
}

TEST_CASE_TEMPLATE("RadixTable: move-only ownership", F, EptFormat, X86PteFormat) {
    FrameSpace fs(64);
    auto t = make_table<F>(fs);
    REQUIRE(t.map(k4K, leaf_for<F>(k4K)));
    RadixTable<F> u = std::move(t);
    CHECK_FALSE(t.valid());
    CHECK(contains(message_of<std::logic_error>([&] { (void)t.root(); }), "found one destroyed or moved from"));
    CHECK_THROWS_AS((void)t.find_leaf(0), std::logic_error);
    CHECK(u.lookup(k4K) == leaf_for<F>(k4K));
    CHECK(fs.counters().in_use == 4);
    // Assigning over a live table frees the old one's frames.
    auto v = make_table<F>(fs);
    REQUIRE(v.map(k512G, leaf_for<F>(k512G)));
    CHECK(fs.counters().in_use == 8);
    u = std::move(v);
    CHECK(fs.counters().in_use == 4);
    CHECK(u.lookup(k512G) == leaf_for<F>(k512G));
    CHECK(u.lookup(k4K) == 0);
    u.destroy();
    u.destroy(); // idempotent
    CHECK(fs.counters().in_use == 0);
    check_balanced(fs);
}

TEST_CASE_TEMPLATE("RadixTable: a densely populated table balances the frame space after destroy", F, EptFormat,
                   X86PteFormat) {
    FrameSpace fs(2048);
    std::set<std::uint64_t> addrs;
    {
        auto t = make_table<F>(fs);
        std::mt19937_64 rng(11);
        for (int i = 0; i < 3000; ++i) {
            const std::uint64_t a = (rng() % kTop) & ~(k4K - 1);
            // Stop adding once the frame space could not hold the tables.
            std::set<std::uint64_t> next = addrs;
            next.insert(a);
            if (tables_needed(next) > fs.allocatable()) break;
            REQUIRE(t.map(a, leaf_for<F>(a)));
            addrs = std::move(next);
        }
        CHECK(t.count_tables() == tables_needed(addrs));
        CHECK(fs.counters().in_use == tables_needed(addrs));
        std::size_t visited = 0;
        t.for_each_leaf(0, kTop, 0, [&](auto, const auto&) { ++visited; });
        CHECK(visited == addrs.size());
    }
    const FrameCounters c = fs.counters();
    CHECK(c.in_use == 0);
    CHECK(c.allocated == c.freed);
    CHECK(c.high_water == tables_needed(addrs));
}
