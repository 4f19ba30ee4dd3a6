#pragma once
#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

namespace hv {
// Reads a whole regular file; throws VmmError naming `what` and the path when
// it is missing, unreadable, not a regular file, or larger than `max_bytes`.
std::vector<std::uint8_t> read_file(const std::string& path, const char* what, std::uint64_t max_bytes);
// This executable, through /proc/self/exe; throws VmmError prefixed with `who`.
std::filesystem::path this_binary(const std::string& who);
// The guest image `name` of the build tree this executable is in (bin/../guest/NAME).
std::string build_tree_guest(const std::string& who, const char* name);
} // namespace hv
