#pragma once
// `vmm run`: builds a VM from the options, runs one thread per vCPU, and
// ends it when a vCPU writes the debug-exit port, every vCPU halted with
// interrupts off, a fatal exit happened, or the timeout expired. Returns the
// exit status of `vmm run` (see vmm_error.hpp).
#include "shadow_vm.hpp"

#include <cstdint>
#include <optional>
#include <string>

namespace hv {

struct RunOptions {
    std::string image;
    std::uint32_t cpus = 1;
    std::uint64_t mem = 128ull << 20;
    std::optional<std::string> initrd;
    std::string cmdline;
    std::optional<std::string> serial_file;
    double timeout_seconds = 0; // 0: no timeout
    bool stats = false;
    bool strict_io = false;
    enum class Paging { Identity, Shadow } paging = Paging::Identity;
    ShadowOptions shadow; // --paging shadow only
};

// Throws VmmError for problems found before the guest starts.
int run_vm(const RunOptions& options);

// Checks of the options that need no KVM; throws VmmError. Exposed for tests.
void validate_run_options(const RunOptions& options);

} // namespace hv
