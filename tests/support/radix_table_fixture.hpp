#pragma once
// Shared by the hv::mmu::RadixTable tests (test_mmu_radix_table_*.cpp):
// address constants, a recognisable leaf per address, the number of tables
// a set of addresses needs, and the level-boundary addresses.
//
// Expected table counts are computed independently of the walker: the
// tables needed for a set of addresses are the root plus one per distinct
// addr >> 39 (PDPTs), addr >> 30 (PDs) and addr >> 21 (PTs).
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <set>
#include <utility>
#include <vector>

#include "mmu/base/frame_space.hpp"
#include "mmu/table/entry_format.hpp"
#include "mmu/table/radix_table.hpp"

TYPE_TO_STRING_AS("EptFormat", hv::mmu::EptFormat);
TYPE_TO_STRING_AS("X86PteFormat", hv::mmu::X86PteFormat);

namespace hv::mmu::test::radix_table {

inline constexpr std::uint64_t k4K = 1ull << 12;
inline constexpr std::uint64_t k2M = 1ull << 21;
inline constexpr std::uint64_t k1G = 1ull << 30;
inline constexpr std::uint64_t k512G = 1ull << 39;
inline constexpr std::uint64_t kTop = 1ull << 48; // one past the last address
inline constexpr std::uint64_t kLastPage = kTop - k4K;

// A distinct, recognisable leaf per address (pfn never 0, so never equal to
// another address's entry, and in both formats a present, readable leaf).
template <class F>
std::uint64_t leaf_for(std::uint64_t addr) {
    return F::make_leaf(((addr >> 12) ^ 0x5A5A5) & 0xFFFFFFFFFull, Perms{.read = true, .write = true, .user = true});
}

inline std::size_t tables_needed(const std::set<std::uint64_t>& addrs) {
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
inline std::vector<std::uint64_t> boundary_addresses() {
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

inline void check_balanced(const FrameSpace& fs) {
    const FrameCounters c = fs.counters();
    CHECK(c.allocated - c.freed == c.in_use);
}

} // namespace hv::mmu::test::radix_table
