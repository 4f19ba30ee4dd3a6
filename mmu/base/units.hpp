#pragma once
// The units every part of the MMU speaks: the 4 KiB page (one frame, one
// leaf entry's reach), the one number format of its messages, and the one
// way to access a table entry atomically in place.
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <string>

namespace hv::mmu {

inline constexpr unsigned kPageShift = 12;
inline constexpr std::uint64_t kPage = std::uint64_t{1} << kPageShift; // a page, a frame

// "0x1f".
inline std::string hex(std::uint64_t value) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(value));
    return buf;
}

// A page-table entry (or any 64-bit word the tables share between threads)
// accessed atomically where it lies.
inline std::atomic_ref<std::uint64_t> at(std::uint64_t* entry) { return std::atomic_ref<std::uint64_t>(*entry); }

} // namespace hv::mmu
