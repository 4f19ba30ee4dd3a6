#pragma once
// The VMAs of this process that overlap an address range, read from
// /proc/self/maps: shared by the tests that check what a mapping looks like
// to the kernel (test_linux_baseline.cpp, test_guest_memory.cpp).
#include <algorithm>
#include <cstdint>
#include <fstream>
#include <span>
#include <sstream>
#include <string>
#include <vector>

namespace hv::test {

// The permission strings ("rw-p") of the VMAs overlapping a range, and how
// many of its bytes they cover.
struct Vmas {
    std::vector<std::string> perms;
    std::uint64_t covered = 0;
};

inline Vmas vmas_over(std::span<const std::uint8_t> range) {
    const auto lo = reinterpret_cast<std::uint64_t>(range.data());
    const auto hi = lo + range.size();
    Vmas v;
    std::ifstream maps("/proc/self/maps");
    for (std::string line; std::getline(maps, line);) {
        std::istringstream in(line);
        std::string span, perms;
        in >> span >> perms;
        const auto dash = span.find('-');
        const std::uint64_t start = std::stoull(span.substr(0, dash), nullptr, 16);
        const std::uint64_t end = std::stoull(span.substr(dash + 1), nullptr, 16);
        if (end <= lo || start >= hi) continue;
        v.perms.push_back(perms);
        v.covered += std::min(end, hi) - std::max(start, lo);
    }
    return v;
}

} // namespace hv::test
