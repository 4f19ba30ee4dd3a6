#pragma once
// Small formatting and parsing helpers shared by the VMM's messages and CLI.
#include "mmu/base/units.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>

namespace hv {

using mmu::hex;                                 // "0x1f" (mmu/base/units.hpp)
std::string format_size(std::uint64_t bytes);  // "64 MiB", "1.5 GiB", "4096 bytes" (approximate)
// The exact value, whole in the largest unit that divides it: "4095 KiB"
// (not format_size's "4.0 MiB"), "4 MiB", "5000 bytes".
std::string format_size_exact(std::uint64_t bytes);

// "1-3, 7, 9-10": vCPU indices in ascending order, runs collapsed.
std::string format_vcpu_list(std::span<const std::uint32_t> sorted);

// `s` as a JSON string literal, quotes included: control characters
// escaped, well-formed UTF-8 kept, any other byte b written as \u00bb.
std::string json_string(const std::string& s);

// Number syntax of the CLI: decimal only (no 0x hex, no octal, no inf/nan).
//
// "64M", "2G", "4096", "512K", "1T" (decimal digits, binary units,
// case-insensitive, optional trailing "iB"/"B"). nullopt on syntax errors or
// overflow.
std::optional<std::uint64_t> parse_size(std::string_view text);

// A whole decimal number with nothing around it; nullopt otherwise.
std::optional<std::uint64_t> parse_u64(const std::string& text);
// A finite decimal number: [+-]digits[.digits][e[+-]digits] ("1.5", ".5",
// "2e3"); nullopt for anything else (hex floats, inf, nan, spaces, overflow).
std::optional<double> parse_double(const std::string& text);

} // namespace hv
