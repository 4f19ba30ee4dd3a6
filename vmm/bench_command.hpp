#pragma once
// `vmm bench EXPERIMENT`: runs one scalability experiment, prints its table,
// and writes JSON and CSV when asked. Experiments so far: fault
// (bench_fault.hpp) and zap (bench_zap.hpp). Exit status 0, or 125
// (kVmmError) for bad arguments.
#include <cstdio>
#include <string>

namespace CLI {
class App;
}

namespace hv {

// The options as typed; empty = not given (the default applies).
struct BenchCommandArgs {
    std::string sizes, batches, repeat, json, csv;  // zap; all
    std::string vcpus, locks, coherences, pages;   // fault
    bool quick = false, no_linux = false;
};

struct BenchCommand {
    CLI::App* bench = nullptr;
    CLI::App* fault = nullptr;
    CLI::App* zap = nullptr;
};

// Adds `bench` and its experiments, storing what is typed into `args`.
BenchCommand add_bench_subcommand(CLI::App& app, BenchCommandArgs& args);

// Validates the options (VmmError naming the option), runs the parsed
// experiment, prints the table to `out`, writes the files; returns 0.
int run_bench_command(const BenchCommand& cmd, const BenchCommandArgs& args, std::FILE* out);

} // namespace hv
