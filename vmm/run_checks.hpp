#pragma once
// What `vmm run` checks of the host before it builds a VM: that KVM has
// two-dimensional paging when shadow mode needs it, and that the open-file
// limit leaves room for one fd per vCPU. (validate_run_options, the checks
// of the options themselves, is declared in vm.hpp and defined here too.)
#include <cstdint>

namespace hv {

// Throws VmmError naming the KVM module and parameter found.
void require_tdp();
// Raises the soft RLIMIT_NOFILE for `cpus` vCPUs, up to the hard limit; throws when that is too low.
void ensure_fd_limit(std::uint32_t cpus);

} // namespace hv
