#pragma once
// Shared by the FrameSpace tests (test_mmu_frames*.cpp): byte and counter
// checks.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <span>

#include "mmu/base/frame_space.hpp"

namespace hv::mmu::test::frames {

inline bool all_bytes(std::span<const std::uint8_t> s, std::uint8_t v) {
    return std::all_of(s.begin(), s.end(), [v](std::uint8_t b) { return b == v; });
}

inline void check_balanced(const FrameCounters& c) {
    CHECK(c.allocated - c.freed == c.in_use);
    CHECK(c.high_water >= c.in_use);
}

} // namespace hv::mmu::test::frames
