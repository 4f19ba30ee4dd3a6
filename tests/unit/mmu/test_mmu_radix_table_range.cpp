// hv::mmu::RadixTable range walks over both entry formats: for_each_leaf
// visits exactly the present leaves in order, stops and resumes at every
// batch size, sees leaves added ahead of its cursor but not behind it, and
// drives a zap loop; for_each_leaf_table visits each leaf table once; and
// free_empty_tables frees exactly the tables left empty.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <random>
#include <set>
#include <type_traits>
#include <utility>
#include <vector>

#include "mmu/base/frame_space.hpp"
#include "mmu/table/entry_format.hpp"
#include "mmu/table/radix_table.hpp"
#include "tests/support/radix_table_fixture.hpp"

using hv::mmu::EptFormat;
using hv::mmu::FrameSpace;
using hv::mmu::Pfn;
using hv::mmu::WalkStatus;
using hv::mmu::X86PteFormat;
using namespace hv::mmu::test::radix_table;

namespace {

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

} // namespace

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
