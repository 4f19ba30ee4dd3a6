#pragma once
// Run a program to completion and keep what it printed: stdout and stderr
// together through one pipe, in the order written. `vmm bench kvm` runs each
// VM as a child `vmm run`, so that a guest that crashes or a VM that times
// out is one failed measurement, not a dead benchmark.
#include <span>
#include <string>

namespace hv {

struct ChildResult {
    int status = 0;     // exit status; 128 + N when killed by signal N
    std::string output; // stdout and stderr interleaved
};

// argv[0] is the program's path (no PATH search). Throws VmmError when the
// pipe cannot be made or the program cannot be started (naming it and the
// errno text), or when argv is empty.
ChildResult run_child(std::span<const std::string> argv);

} // namespace hv
