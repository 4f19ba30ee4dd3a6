// hv::mmu::RadixTable over both entry formats: point walks at level
// boundaries and the top of the 48-bit space, tables created exactly once
// (also by racing threads), exhaustion that leaks nothing, range walks that
// stop and resume at every batch size, leaf-table visits, freeing empty
// tables, large leaves, and readers racing writers.
//
// Expected table counts are computed independently of the walker: the
// tables needed for a set of addresses are the root plus one per distinct
// addr >> 39 (PDPTs), addr >> 30 (PDs) and addr >> 21 (PTs).
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <latch>
#include <map>
#include <random>
#include <set>
#include <stdexcept>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#include "entry_format.hpp"
#include "frame_space.hpp"
#include "radix_table.hpp"

using hv::mmu::EptFormat;
using hv::mmu::FrameCounters;
using hv::mmu::FrameSpace;
using hv::mmu::Perms;
using hv::mmu::Pfn;
using hv::mmu::RadixTable;
using hv::mmu::WalkStatus;
using hv::mmu::X86PteFormat;

TYPE_TO_STRING_AS("EptFormat", hv::mmu::EptFormat);
TYPE_TO_STRING_AS("X86PteFormat", hv::mmu::X86PteFormat);

namespace {

constexpr std::uint64_t k4K = 1ull << 12;
constexpr std::uint64_t k2M = 1ull << 21;
constexpr std::uint64_t k1G = 1ull << 30;
constexpr std::uint64_t k512G = 1ull << 39;
constexpr std::uint64_t kTop = 1ull << 48; // one past the last address
constexpr std::uint64_t kLastPage = kTop - k4K;

template <class E, class Fn>
std::string message_of(Fn&& f) {
    try {
        f();
    } catch (const E& e) {
        return e.what();
    }
    return "";
}

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

// A distinct, recognisable leaf per address (pfn never 0, so never equal to
// another address's entry, and in both formats a present, readable leaf).
template <class F>
std::uint64_t leaf_for(std::uint64_t addr) {
    return F::make_leaf(((addr >> 12) ^ 0x5A5A5) & 0xFFFFFFFFFull, Perms{.read = true, .write = true, .user = true});
}

// A non-zero entry that is not present: a walk must skip it, and it keeps
// its table from being freed.
template <class F>
std::uint64_t not_present_for(std::uint64_t addr) {
    const std::uint64_t e = leaf_for<F>(addr);
    if constexpr (std::is_same_v<F, EptFormat>)
        return e & ~0x7ull; // clear R/W/X (bits 2:0); the memory type bits remain
    else
        return e & ~0x1ull; // clear P (bit 0)
}

std::size_t tables_needed(const std::set<std::uint64_t>& addrs) {
    std::set<std::uint64_t> pdpt, pd, pt;
    for (std::uint64_t a : addrs) {
        pdpt.insert(a >> 39);
        pd.insert(a >> 30);
        pt.insert(a >> 21);
    }
    return 1 + pdpt.size() + pd.size() + pt.size();
}

template <class F>
RadixTable<F> make_table(FrameSpace& fs) {
    auto t = RadixTable<F>::create(fs);
    REQUIRE(t.has_value());
    return std::move(*t);
}

// Level boundaries, both sides, and the extremes of the 48-bit space.
std::vector<std::uint64_t> boundary_addresses() {
    return {0,
            k4K,
            k2M - k4K,
            k2M,
            k2M + k4K,
            k1G - k4K,
            k1G,
            k1G + k2M,
            k512G - k4K,
            k512G,
            k512G + k1G + k2M + k4K,
            0x123456789000ull,
            kTop / 2 - k4K, // last page of the lower canonical half
            kTop / 2,
            kLastPage - k512G,
            kLastPage - k1G,
            kLastPage - k2M,
            kLastPage};
}

// Clustered random pages: several 2 MiB blocks in a few 1 GiB and 512 GiB
// regions, a handful of pages in each, plus the boundary addresses.
std::set<std::uint64_t> populated_addresses(unsigned seed, int blocks, int per_block) {
    std::mt19937_64 rng(seed);
    std::set<std::uint64_t> out;
    for (std::uint64_t a : boundary_addresses()) out.insert(a);
    const std::uint64_t regions[] = {0, 3 * k512G + 7 * k1G, 200 * k512G + 511 * k1G, kTop - k512G};
    for (int b = 0; b < blocks; ++b) {
        const std::uint64_t region = regions[rng() % 4];
        const std::uint64_t block = region + (rng() % 3) * k1G + (rng() % 512) * k2M;
        for (int i = 0; i < per_block; ++i) out.insert(block + (rng() % 512) * k4K);
    }
    return out;
}

void check_balanced(const FrameSpace& fs) {
    const FrameCounters c = fs.counters();
    CHECK(c.allocated - c.freed == c.in_use);
}

} // namespace

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

TEST_CASE_TEMPLATE("RadixTable: for_each_leaf visits exactly the present leaves, in order", F, EptFormat,
                   X86PteFormat) {
    FrameSpace fs(1024);
    auto t = make_table<F>(fs);
    const auto present = populated_addresses(1, 24, 12);
    for (std::uint64_t a : present) REQUIRE(t.map(a, leaf_for<F>(a)));
    // Non-present, non-zero entries in the same tables must be skipped.
    std::set<std::uint64_t> hidden;
    for (std::uint64_t a : present) {
        const std::uint64_t h = a ^ k4K; // the neighbouring page, same leaf table
        if (!present.count(h)) hidden.insert(h);
    }
    for (std::uint64_t h : hidden) REQUIRE(t.map(h, not_present_for<F>(h)));

    // Whole space, and sub-ranges with unaligned ends.
    std::mt19937_64 rng(7);
    std::vector<std::pair<std::uint64_t, std::uint64_t>> ranges = {{0, kTop}, {0, k4K}, {k2M - k4K, k2M + k4K},
                                                                   {kLastPage, kTop}, {kLastPage + 1, kTop}};
    for (int i = 0; i < 20; ++i) {
        std::uint64_t a = rng() % kTop, b = rng() % kTop;
        ranges.push_back({std::min(a, b), std::max(a, b)});
    }
    for (std::uint64_t a : present) ranges.push_back({a + 1, std::min(a + 3 * k2M, kTop)});
    for (const auto& range : ranges) {
        const std::uint64_t start = range.first, end = range.second; // (clang 14: no lambda capture of bindings)
        CAPTURE(start);
        CAPTURE(end);
        std::vector<std::uint64_t> expected;
        for (std::uint64_t a : present)
            if (a + k4K > start && a < end) expected.push_back(a); // the page overlaps the range
        std::vector<std::uint64_t> seen;
        const std::uint64_t resume = t.for_each_leaf(start, end, 0, [&](std::uint64_t addr, const auto& slot) {
            seen.push_back(addr);
            CHECK(slot.level == 1);
            CHECK(t.load(slot) == leaf_for<F>(addr));
            CHECK(slot.entry == t.find_leaf(addr)->entry);
        });
        CHECK(resume == end);
        CHECK(seen == expected);
    }
}

TEST_CASE_TEMPLATE("RadixTable: stop and resume at every batch size visits each leaf once, in order", F,
                   EptFormat, X86PteFormat) {
    FrameSpace fs(1024);
    auto t = make_table<F>(fs);
    const auto present = populated_addresses(2, 10, 8);
    for (std::uint64_t a : present) REQUIRE(t.map(a, leaf_for<F>(a)));
    const std::vector<std::uint64_t> expected(present.begin(), present.end());
    const std::size_t n = expected.size();
    REQUIRE(n > 50);

    for (std::size_t batch = 1; batch <= n + 1; ++batch) {
        CAPTURE(batch);
        std::vector<std::uint64_t> seen;
        std::uint64_t cursor = 0;
        std::size_t calls = 0;
        bool ok = true;
        while (cursor < kTop) {
            std::size_t in_call = 0;
            const std::uint64_t next = t.for_each_leaf(cursor, kTop, batch, [&](std::uint64_t addr, const auto&) {
                seen.push_back(addr);
                ++in_call;
            });
            ++calls;
            // Progress, at most `batch` per call, and a full batch unless finished.
            ok = ok && next > cursor && in_call <= batch && (in_call == batch || next == kTop);
            // The resume point is just past the last leaf visited.
            if (next != kTop) ok = ok && !seen.empty() && next == seen.back() + k4K;
            cursor = next;
            if (calls > n + 2) break;
        }
        CHECK(ok);
        CHECK(cursor == kTop);
        CHECK(seen == expected);
        CHECK(calls <= n / batch + 2);
    }
    // 0 = unlimited: one call.
    std::size_t all = 0;
    CHECK(t.for_each_leaf(0, kTop, 0, [&](auto, const auto&) { ++all; }) == kTop);
    CHECK(all == n);
}

TEST_CASE_TEMPLATE("RadixTable: leaves added behind the cursor are not revisited, ones ahead are", F, EptFormat,
                   X86PteFormat) {
    FrameSpace fs(256);
    auto t = make_table<F>(fs);
    // Every third page of the first 4 MiB (two leaf tables).
    std::set<std::uint64_t> initial;
    for (std::uint64_t a = 0; a < 2 * k2M; a += 3 * k4K) initial.insert(a);
    for (std::uint64_t a : initial) REQUIRE(t.map(a, leaf_for<F>(a)));

    std::vector<std::uint64_t> seen;
    auto collect = [&](std::uint64_t addr, const auto&) { seen.push_back(addr); };
    std::uint64_t cursor = t.for_each_leaf(0, kTop, 100, collect);
    REQUIRE(seen.size() == 100);
    REQUIRE(cursor == seen.back() + k4K);

    // Between batches (the caller's locks dropped): add behind and ahead,
    // including ahead in tables that do not exist yet, and remove one ahead.
    const std::uint64_t behind = seen[50] + k4K; // a hole between visited leaves
    REQUIRE(!initial.count(behind));
    const std::uint64_t ahead_near = cursor + k4K; // next page after the cursor
    const std::uint64_t ahead_far = 9 * k512G + 3 * k1G + 5 * k2M; // new PDPT, PD, PT
    const std::uint64_t removed = *initial.upper_bound(cursor + 30 * k4K);
    REQUIRE(!initial.count(ahead_near));
    REQUIRE(t.map(behind, leaf_for<F>(behind)));
    REQUIRE(t.map(ahead_near, leaf_for<F>(ahead_near)));
    REQUIRE(t.map(ahead_far, leaf_for<F>(ahead_far)));
    CHECK(t.unmap(removed) == leaf_for<F>(removed));
    // A leaf at exactly the cursor counts as ahead.
    REQUIRE(!initial.count(cursor));
    REQUIRE(t.map(cursor, leaf_for<F>(cursor)));

    CHECK(cursor < kTop);
    while (cursor < kTop) cursor = t.for_each_leaf(cursor, kTop, 7, collect);

    // Expected visit sequence: the first 100 of `initial`, then everything
    // present at or after the first cursor, in order.
    std::vector<std::uint64_t> expected(initial.begin(), initial.end());
    expected.resize(100);
    const std::uint64_t first_cursor = expected.back() + k4K;
    std::set<std::uint64_t> rest;
    for (std::uint64_t a : initial)
        if (a >= first_cursor && a != removed) rest.insert(a);
    rest.insert({first_cursor, ahead_near, ahead_far});
    expected.insert(expected.end(), rest.begin(), rest.end());
    CHECK(seen == expected);
    CHECK(std::count(seen.begin(), seen.end(), behind) == 0);
    CHECK(std::count(seen.begin(), seen.end(), first_cursor) == 1);
    CHECK(std::is_sorted(seen.begin(), seen.end()));
}

TEST_CASE_TEMPLATE("RadixTable: a zap loop clears in batches and resumes", F, EptFormat, X86PteFormat) {
    FrameSpace fs(1024);
    auto t = make_table<F>(fs);
    const auto present = populated_addresses(3, 16, 16);
    for (std::uint64_t a : present) REQUIRE(t.map(a, leaf_for<F>(a)));
    // Zap [lo, hi) 5 entries per "lock hold", as the shadow MMU will.
    const std::uint64_t lo = k1G - k2M, hi = 3 * k512G + 8 * k1G + k2M;
    std::set<std::uint64_t> zapped;
    std::uint64_t cursor = lo;
    while (cursor < hi) {
        cursor = t.for_each_leaf(cursor, hi, 5, [&](std::uint64_t addr, const auto& slot) {
            CHECK(t.exchange(slot, 0) == leaf_for<F>(addr));
            zapped.insert(addr);
        });
    }
    std::set<std::uint64_t> expected;
    for (std::uint64_t a : present)
        if (a >= lo && a < hi) expected.insert(a);
    CHECK(zapped == expected);
    for (std::uint64_t a : present) CHECK((t.lookup(a) == 0) == (a >= lo && a < hi));
    int left = 0;
    t.for_each_leaf(lo, hi, 0, [&](auto, const auto&) { ++left; });
    CHECK(left == 0);
}

TEST_CASE_TEMPLATE("RadixTable: for_each_leaf_table visits each leaf table of a range once, in order", F,
                   EptFormat, X86PteFormat) {
    FrameSpace fs(1024);
    auto t = make_table<F>(fs);
    const auto present = populated_addresses(4, 20, 4);
    for (std::uint64_t a : present) REQUIRE(t.map(a, leaf_for<F>(a)));
    for (const auto& range : std::vector<std::pair<std::uint64_t, std::uint64_t>>{
             {0, kTop}, {k2M + 1, k1G + 5 * k2M}, {kLastPage, kTop}, {3 * k512G, 4 * k512G}}) {
        const std::uint64_t start = range.first, end = range.second;
        CAPTURE(start);
        CAPTURE(end);
        std::vector<std::uint64_t> expected_starts;
        std::map<std::uint64_t, Pfn> table_of;
        for (std::uint64_t a : present) {
            const std::uint64_t block = a & ~(k2M - 1);
            if (block + k2M > start && block < end) {
                if (expected_starts.empty() || expected_starts.back() != block) expected_starts.push_back(block);
                table_of[block] = t.find_leaf(a)->table;
            }
        }
        std::vector<std::uint64_t> starts;
        const std::size_t n = t.for_each_leaf_table(start, end, [&](Pfn table, std::uint64_t table_start) {
            starts.push_back(table_start);
            CHECK(table_of[table_start] == table);
        });
        CHECK(n == expected_starts.size());
        CHECK(starts == expected_starts);
    }
}

TEST_CASE_TEMPLATE("RadixTable: free_empty_tables frees exactly the tables left empty", F, EptFormat,
                   X86PteFormat) {
    FrameSpace fs(64);
    auto t = make_table<F>(fs);
    // root, PDPT0, PD0 with PT[0] and PT[2M], PD[1G] with PT[1G]: 7 tables.
    const std::uint64_t a = 0, b = k2M + 5 * k4K, c = k1G + 9 * k4K;
    for (std::uint64_t x : {a, b, c}) REQUIRE(t.map(x, leaf_for<F>(x)));
    REQUIRE(t.count_tables() == 7);
    CHECK(t.free_empty_tables(0, kTop) == 0); // nothing is empty

    // Empty PT[2M]: only it goes; PD0 still holds PT[0].
    t.unmap(b);
    CHECK(t.free_empty_tables(b, b + k4K) == 1); // overlapping the table is enough
    CHECK(t.count_tables() == 6);
    CHECK(t.walk(b).status == WalkStatus::MissingTable);
    CHECK(t.walk(b).slot.level == 2);

    // A non-present but non-zero entry keeps its table.
    REQUIRE(t.map(a + k4K, not_present_for<F>(a + k4K)));
    t.unmap(a);
    CHECK(t.free_empty_tables(0, k2M) == 0);
    t.unmap(a + k4K);
    // Now PT[0] is empty, then PD0 (its only child gone); PDPT0 keeps PD[1G].
    CHECK(t.free_empty_tables(0, k2M) == 2);
    CHECK(t.count_tables() == 4);
    CHECK(t.lookup(c) == leaf_for<F>(c));

    // A range that misses the 1 GiB region frees nothing there.
    t.unmap(c);
    CHECK(t.free_empty_tables(0, k1G) == 0);
    // The deferred variant: frames are unlinked and handed over, still allocated.
    std::vector<Pfn> released;
    CHECK(t.free_empty_tables(0, kTop, [&](Pfn p) { released.push_back(p); }) == 3); // PT, PD, PDPT
    CHECK(released.size() == 3);
    for (Pfn p : released) CHECK(fs.is_allocated(p));
    CHECK(t.count_tables() == 1); // the root stays
    CHECK(fs.counters().in_use == 4);
    for (Pfn p : released) fs.free(p);
    CHECK(fs.counters().in_use == 1);
    // The tree is usable afterwards.
    REQUIRE(t.map(c, leaf_for<F>(c)));
    CHECK(t.count_tables() == 4);
    t.destroy();
    CHECK(fs.counters().in_use == 0);
    check_balanced(fs);
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
