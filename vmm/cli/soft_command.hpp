#pragma once
// `vmm soft`: software vCPUs over the shadow MMU with host churn, the
// policies chosen on the command line, a summary table and a JSON report.
// Exit status: 0 when no write was lost, no stale translation was used and
// the MMU audit is clean; 1 otherwise; 125 (kVmmError) for bad arguments.
#include "mmu/soft/soft_vcpu.hpp"

#include <cstdio>
#include <string>

namespace CLI {
class App;
}

namespace hv {

// The options as typed; empty = not given (the default applies).
struct SoftCommandArgs {
    std::string vcpus, seconds, ops, pattern, sharing, writes, pages, tlb, tlb_model, lock, coherence, batch, churn,
        seed, json, frames;
    std::string churn_memslot, churn_zero_merge, churn_range, external_tlb, memslots, time_limit;
};

struct SoftCommandOptions {
    mmu::SoftRunConfig run;
    mmu::ShadowConfig shadow;
    std::size_t frames = 0; // 0 = sized from the configuration
    std::string json;       // empty = no JSON file
};

// Validates every value; throws VmmError with a one-line message naming the option.
SoftCommandOptions parse_soft_args(const SoftCommandArgs& args);

// Adds the `soft` subcommand, storing what is typed into `args`.
CLI::App* add_soft_subcommand(CLI::App& app, SoftCommandArgs& args);

// The summary table and the JSON report of a finished run.
std::string soft_summary(const SoftCommandOptions& opt, const mmu::SoftRunResult& r);
std::string soft_json(const SoftCommandOptions& opt, const mmu::SoftRunResult& r);

// Runs, prints the summary to `out`, writes the JSON file when asked (throws
// VmmError when it cannot), returns the exit status (0 or 1).
int run_soft_command(const SoftCommandOptions& opt, std::FILE* out);

} // namespace hv
