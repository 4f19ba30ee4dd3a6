#pragma once
// `vmm bench EXPERIMENT`: runs one scalability experiment, prints its table,
// and writes JSON and CSV when asked. Experiments: fault (bench_fault.hpp),
// zap (bench_zap.hpp), mixed (bench_mixed.hpp) and kvm (bench_kvm.hpp).
// Exit status 0; 125 (kVmmError) for bad arguments or a failed measurement;
// kSkipped when `kvm` finds no usable /dev/kvm.
#include <cstdio>
#include <string>

namespace CLI {
class App;
}

namespace hv {

// The options as typed; empty = not given (the default applies).
struct BenchCommandArgs {
    std::string sizes, batches, repeat, json, csv;  // zap (batches: also mixed); all
    std::string vcpus, locks, coherences, pages;   // fault (locks, coherences: also mixed)
    std::string size, fault_threads;               // mixed
    std::string guest;                             // kvm (also vcpus, locks, coherences, pages)
    bool quick = false, no_linux = false;
};

struct BenchCommand {
    CLI::App* bench = nullptr;
    CLI::App* fault = nullptr;
    CLI::App* zap = nullptr;
    CLI::App* mixed = nullptr;
    CLI::App* kvm = nullptr;
};

// `vmm bench kvm` without a usable /dev/kvm: it prints why and exits with
// this status (the automake/CTest "skipped" convention).
inline constexpr int kBenchSkipped = 77;

// Adds `bench` and its experiments, storing what is typed into `args`.
BenchCommand add_bench_subcommand(CLI::App& app, BenchCommandArgs& args);

// Validates the options (VmmError naming the option), runs the parsed
// experiment, prints the table to `out`, writes the files; returns 0.
int run_bench_command(const BenchCommand& cmd, const BenchCommandArgs& args, std::FILE* out);

} // namespace hv
