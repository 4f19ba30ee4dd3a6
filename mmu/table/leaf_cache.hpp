#pragma once
// LeafCache: the leaf table a CPU walked to last, for tables whose leaf
// tables are never freed while the table lives (the host's and the shadow
// MMU's): the next fault in the same 2 MiB skips the three upper levels (a
// software paging-structure cache).
//
// One 64-bit word, so a cache that two threads use at once (against the
// one-thread-per-CPU rule) can only miss, never pair one address with
// another's table.
#include "mmu/base/frame_space.hpp"

#include <atomic>
#include <cstdint>
#include <optional>

namespace hv::mmu {

class LeafCache {
public:
    std::optional<Pfn> table_for(std::uint64_t addr) const {
        const std::uint64_t v = word_.load(std::memory_order_relaxed);
        if (v != 0 && (v >> kPfnBits) == (addr >> kSpanShift) + 1) return v & kPfnMask;
        return std::nullopt;
    }
    void remember(std::uint64_t addr, Pfn table) {
        if (table > kPfnMask || addr >> 48) return;
        word_.store((((addr >> kSpanShift) + 1) << kPfnBits) | table, std::memory_order_relaxed);
    }
    void forget() { word_.store(0, std::memory_order_relaxed); }

private:
    static constexpr unsigned kSpanShift = 21; // one leaf table maps 2 MiB
    static constexpr unsigned kPfnBits = 36;   // 27 + 1 bits of 2 MiB index above
    static constexpr std::uint64_t kPfnMask = (std::uint64_t{1} << kPfnBits) - 1;
    std::atomic<std::uint64_t> word_{0};
};

} // namespace hv::mmu
