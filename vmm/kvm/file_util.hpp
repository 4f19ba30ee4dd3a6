#pragma once
#include "vmm/kvm/unique_fd.hpp"

#include <cstdint>
#include <filesystem>
#include <string>
#include <sys/types.h>
#include <vector>

namespace hv {
// Reads a whole regular file; throws VmmError naming `what` and the path when
// it is missing, unreadable, not a regular file (a FIFO is refused at once,
// never waited on), or larger than `max_bytes`.
std::vector<std::uint8_t> read_file(const std::string& path, const char* what, std::uint64_t max_bytes);

// Opens an output the VMM streams to (--serial): a regular file (created or
// truncated), a character device (/dev/null, a terminal), or a FIFO that a
// process already has open for reading. Never blocks: a FIFO without a
// reader, and any other kind of file, is refused with a VmmError naming
// `what`. The descriptor is in blocking mode.
UniqueFd open_output_file(const std::string& path, const std::string& what);

// A file the VMM replaces by renaming a new one over it (--json of `vmm
// run`) must be a regular file or not exist yet; throws VmmError otherwise.
void require_regular_or_new(const std::string& path, const std::string& what);

// For an output that other code opens later with a blocking open(): when
// `path` is a FIFO, opens it without blocking (refused as in
// open_output_file when nothing reads it) and returns that descriptor, which
// the caller holds until the output is written, so the reader sees no end of
// file in between. Invalid descriptor for anything else.
UniqueFd hold_fifo_output(const std::string& path, const std::string& what);

// "a regular file", "a FIFO", "a directory", ... for messages.
std::string file_type_name(mode_t mode);

// This executable, through /proc/self/exe; throws VmmError prefixed with `who`.
std::filesystem::path this_binary(const std::string& who);
// The guest image `name` of the build tree this executable is in (bin/../guest/NAME).
std::string build_tree_guest(const std::string& who, const char* name);
} // namespace hv
