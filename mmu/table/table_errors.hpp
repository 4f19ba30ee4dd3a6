#pragma once
// The messages RadixTable throws, out of line of the walkers: the checks
// stay inline (every walk makes one), building a message does not. Every
// message starts "RadixTable<FORMAT>::OP: " and says what was expected and
// what was found.
#include "mmu/base/units.hpp"

#include <cstdint>
#include <stdexcept>
#include <string>

namespace hv::mmu::detail {

inline std::string table_prefix(const char* format, const char* op) {
    return std::string("RadixTable<") + format + ">::" + op + ": ";
}

// std::logic_error: the table was destroyed or moved from.
[[noreturn, gnu::cold, gnu::noinline]] inline void table_not_live(const char* format, const char* op) {
    throw std::logic_error(table_prefix(format, op) + "expected a live table, found one destroyed or moved from");
}

// std::out_of_range for addr >= limit (a limit of 2^bits), or the
// logic_error above when the table is not live.
[[noreturn, gnu::cold, gnu::noinline]] inline void table_bad_address(const char* format, const char* op, bool live,
                                                                     std::uint64_t addr, std::uint64_t limit,
                                                                     unsigned bits) {
    if (!live) table_not_live(format, op);
    throw std::out_of_range(table_prefix(format, op) + "expected an address below " + hex(limit) + " (" +
                            std::to_string(bits) + " bits), found " + hex(addr));
}

// std::out_of_range for a range not within start <= end <= limit, or the
// logic_error above when the table is not live.
[[noreturn, gnu::cold, gnu::noinline]] inline void table_bad_range(const char* format, const char* op, bool live,
                                                                   std::uint64_t start, std::uint64_t end,
                                                                   std::uint64_t limit) {
    if (!live) table_not_live(format, op);
    throw std::out_of_range(table_prefix(format, op) + "expected start <= end <= " + hex(limit) + ", found [" +
                            hex(start) + ", " + hex(end) + ")");
}

// std::logic_error: a 4 KiB leaf operation met a large leaf covering addr.
[[noreturn, gnu::cold, gnu::noinline]] inline void table_large_leaf(const char* format, const char* op,
                                                                    std::uint64_t addr, std::uint64_t entry,
                                                                    unsigned level) {
    throw std::logic_error(table_prefix(format, op) + "expected a 4 KiB leaf at " + hex(addr) +
                           ", found a large leaf " + hex(entry) + " at level " + std::to_string(level));
}

} // namespace hv::mmu::detail
