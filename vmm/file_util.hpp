#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace hv {
// Reads a whole regular file; throws VmmError naming `what` and the path when
// it is missing, unreadable, not a regular file, or larger than `max_bytes`.
std::vector<std::uint8_t> read_file(const std::string& path, const char* what, std::uint64_t max_bytes);
} // namespace hv
