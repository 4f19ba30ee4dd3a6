#pragma once
// `vmm fuzz-guest --input FILE|DIR... [--guest IMAGE] [--timeout S]`: runs
// inputs of the `guest` fuzz target under KVM. An input is 4 bytes of
// configuration (vCPUs 1-8, lock policy, coherence policy, zap batch 1, 2,
// 3, 64, 512 or unlimited; each byte taken modulo its choices) and then a
// program for the fuzz guest (guest/fuzz.c: two bytes an operation: writes
// and reads of stamps, host operations by hypercall, invlpg, syncs), which
// runs on every vCPU in shadow mode over a 16-page region. The oracle is the
// guest's own read-back of its stamps, the VMM's read of every vCPU's last
// stamps through the host tables (HV_CALL_VERIFY), and the shadow MMU audit
// after the run: `vmm run`'s exit status says all three passed.
// Exit status: 0 when every input passed, 1 when any failed, 125 for bad
// arguments or an input over kMaxInput bytes.
#include "vmm/run/vm.hpp"

#include <cstdint>
#include <cstdio>
#include <span>
#include <string>
#include <vector>

namespace CLI {
class App;
}

namespace hv {

struct FuzzGuestInput {
    static constexpr std::size_t kHeader = 4, kMaxProgram = 1024, kMaxInput = kHeader + kMaxProgram;
    static constexpr std::uint64_t kRegionPages = 16;
    std::uint32_t cpus = 1;
    mmu::LockPolicy lock = mmu::LockPolicy::Global;
    mmu::CoherencePolicy coherence = mmu::CoherencePolicy::Seq;
    std::size_t batch = 1;
    std::vector<std::uint8_t> program; // an odd last byte is dropped
};

// Any bytes up to kMaxInput decode (missing configuration bytes count as 0);
// a longer input throws VmmError naming `name`.
FuzzGuestInput decode_fuzz_guest_input(std::span<const std::uint8_t> bytes, const std::string& name);
// "4 vCPUs, rw/seq/batch 512, 37 operations"
std::string describe(const FuzzGuestInput& in);
// The `vmm run` options for an input: shadow paging, 64 MiB, the 16-page
// region, the policies, the program as prog=HEX on the command line.
RunOptions fuzz_guest_run_options(const FuzzGuestInput& in, const std::string& guest_image, double timeout_seconds,
                                  bool skip_shootdown = false);

struct FuzzGuestArgs {
    std::vector<std::string> inputs;
    std::string guest; // empty: guest/fuzz.elf of this binary's build tree
    double timeout = 60;
    bool skip_shootdown = false; // --unsafe-skip-shootdown: the evidence that the oracle sees stale TLBs
};
CLI::App* add_fuzz_guest_subcommand(CLI::App& app, FuzzGuestArgs& args);
// Runs every input (files, or the files of directories, in name order);
// prints one line per input and a summary to `out`; returns 0 or 1. Throws
// VmmError for a missing input or guest image, or an input too long.
int run_fuzz_guest_command(const FuzzGuestArgs& args, std::FILE* out);

} // namespace hv
