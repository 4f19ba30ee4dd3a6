// The `vmm` executable: a thin CLI over the VMM library.
#include "vmm/boot/guest_layout.hpp"
#include "vmm/cli/bench_command.hpp"
#include "vmm/cli/fuzz_guest_command.hpp"
#include "vmm/cli/info_command.hpp"
#include "vmm/cli/mmu_options.hpp"
#include "vmm/cli/soft_command.hpp"
#include "vmm/kvm/file_util.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/run/vm.hpp"

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>

namespace {

// `vmm run --timeout`: 0 means none; above this many seconds (11.6 days) a
// value is a mistake, and the deadline would not fit the clock's range.
constexpr double kMaxTimeoutSeconds = 1e6;

// What `vmm run` was given; the text is converted once CLI11 has parsed it.
struct RunArgs {
    hv::RunOptions opt;
    std::string mem = "128M", timeout = "0", platform = "pc", paging = "identity", region, seed;
    hv::MmuPolicyArgs policy;
    bool strict_faults = false, skip_shootdown = false;
};

// CLI11 reads integers with strtoull(base 0): "0x10" and "010" (octal 8)
// would pass. Every number of the CLI is decimal (format.hpp). The range is
// validate_run_options's, whose messages name each limit. The wording starts
// as CLI11's own range message did, which scripts and tests match.
CLI::Validator decimal_cpus() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            const auto v = hv::parse_u64(text);
            if (v && *v <= UINT32_MAX) return {};
            return "Value " + text + " not in range 1 to " + std::to_string(hv::layout::kMaxCpus) +
                   ": expected a decimal whole number";
        },
        "1.." + std::to_string(hv::layout::kMaxCpus));
}

// fuzz-guest's --timeout: CLI11's Range lets "nan" and "0x10" through.
CLI::Validator decimal_seconds() {
    return CLI::Validator(
        [](std::string& text) -> std::string {
            if (hv::parse_double(text)) return {};
            return "expected a decimal number of seconds, got '" + text + "'";
        },
        "DECIMAL");
}

CLI::App* add_run_subcommand(CLI::App& app, RunArgs& a) {
    auto* run = app.add_subcommand("run", "Boot IMAGE (Linux bzImage, static ELF64 or multiboot v1 ELF32) in a new VM");
    run->add_option("--cpus", a.opt.cpus, "Number of vCPUs, one thread each (1 .. 1024 and KVM's maximum)")
        ->default_val(1)
        ->check(decimal_cpus());
    run->add_option("--mem", a.mem, "Guest RAM size, with K/M/G suffix (4M .. 64G, multiple of 4K)")->default_val("128M");
    run->add_option("--initrd", a.opt.initrd, "Initramfs of a Linux kernel, or the module of a multiboot image (a regular file)");
    run->add_option("--cmdline", a.opt.cmdline, "Command line for the guest (a Linux kernel's default: console=ttyS0)");
    run->add_option("--serial", a.opt.serial_file,
                    "Write the serial console to FILE instead of stdout (a regular file, a character device or a FIFO with a reader)");
    run->add_option("--timeout", a.timeout, "Stop the guest after S seconds (exit status 124), 0 .. 1000000; 0 = never")
        ->default_val("0");
    run->add_flag("--stats", a.opt.stats, "Print run statistics to stderr at the end");
    run->add_option("--json", a.opt.json_file,
                    "Write the run's result (how it ended, exits, times, peak RSS) as JSON to FILE (a regular file or a new one)");
    run->add_option("--platform", a.platform,
                    "pc: the whole PC (APICs, PIT, ACPI, MP table, fw_cfg, ...); bare: CPUs, RAM, serial port only")
        ->default_val("pc");
    run->add_flag("--strict-io", a.opt.strict_io, "Stop the VM on an access to a port or address no device claims");
    run->add_option("--paging", a.paging,
                    "identity: KVM's own paging of an identity map; shadow: the guest runs on our MMU's tables")
        ->default_val("identity");
    run->add_option("--region", a.region, "Shadow mode: size of the demand-mapped region (default 32M)");
    run->add_option("--lock", a.policy.lock, "Shadow mode: MMU lock policy global, rw or split (default rw)");
    run->add_option("--coherence", a.policy.coherence, "Shadow mode: seq, ptlock or range-active (default seq)");
    run->add_option("--batch", a.policy.batch, "Shadow mode: entries zapped per lock hold; 0 = unlimited (default 512)");
    run->add_option("--churn", a.policy.churn,
                    "Shadow mode: host operations OP=RATE,... (migrate, unmap, protect, merge, swap, age) while the guest runs");
    run->add_option("--seed", a.seed, "Shadow mode: seed of the churn's page choice (default 1)");
    run->add_flag("--strict-faults", a.strict_faults,
                  "Shadow mode: stop the VM on a page fault the MMU cannot resolve, with a crash report");
    run->add_flag("--unsafe-skip-shootdown", a.skip_shootdown,
                  "Shadow mode, DEBUGGING ONLY: never flush guest TLBs after zaps (the guest sees stale memory)");
    run->add_option("IMAGE", a.opt.image,
                    "Guest image: a Linux bzImage, a static 64-bit ELF or a multiboot ELF32 (a regular file; the kind is "
                    "detected from its contents)")
        ->required();
    return run;
}

double parse_timeout(const std::string& text) {
    const auto t = hv::parse_double(text);
    if (!t || *t < 0 || *t > kMaxTimeoutSeconds)
        throw hv::VmmError("--timeout: expected a decimal number of seconds from 0 (no timeout) to 1000000, got '" +
                           text + "'");
    return *t;
}

void convert_shadow_args(RunArgs& a) {
    const bool shadow_given = !a.region.empty() || !a.seed.empty() || !a.policy.lock.empty() ||
                              !a.policy.coherence.empty() || !a.policy.batch.empty() || !a.policy.churn.empty() ||
                              a.strict_faults || a.skip_shootdown;
    if (shadow_given && a.opt.paging != hv::RunOptions::Paging::Shadow)
        throw hv::VmmError("--region, --lock, --coherence, --batch, --churn, --seed, --strict-faults and "
                           "--unsafe-skip-shootdown need --paging shadow");
    hv::parse_mmu_policies(a.policy, a.opt.shadow.mmu, a.opt.shadow.churn_rate);
    if (!a.region.empty()) {
        const auto region = hv::parse_size(a.region);
        if (!region) throw hv::VmmError("--region: expected a size such as 16M or 1G, got '" + a.region + "'");
        a.opt.shadow.region_size = *region;
    }
    if (!a.seed.empty()) {
        const auto seed = hv::parse_u64(a.seed);
        if (!seed) throw hv::VmmError("--seed must be a non-negative decimal integer, got '" + a.seed + "'");
        a.opt.shadow.seed = *seed;
    }
    a.opt.shadow.strict_faults = a.strict_faults;
    a.opt.shadow.skip_shootdown = a.skip_shootdown;
}

// --mem's text to bytes. Its range is validate_run_options's too; checked
// here first so the value is printed exactly ("4095 KiB", where
// format_size rounds to "4.0 MiB", next to the minimum of 4 MiB).
std::uint64_t parse_mem(const std::string& text) {
    const auto size = hv::parse_size(text);
    if (!size)
        throw hv::VmmError("--mem: expected a size such as 64M, 2G or 4096 (decimal, with an optional K, M, G or T "
                           "suffix), got '" + text + "'");
    if (*size < hv::layout::kMinRam)
        throw hv::VmmError("--mem " + hv::format_size_exact(*size) + " is too small; the minimum is " +
                           hv::format_size_exact(hv::layout::kMinRam));
    if (*size > hv::layout::kMaxRam)
        throw hv::VmmError("--mem " + hv::format_size_exact(*size) + " exceeds the maximum of " +
                           hv::format_size_exact(hv::layout::kMaxRam));
    return *size;
}

// Fills a.opt from the option text; throws VmmError naming the option.
void convert_run_args(RunArgs& a) {
    a.opt.mem = parse_mem(a.mem);
    a.opt.timeout_seconds = parse_timeout(a.timeout);
    const auto platform = hv::platform_named(a.platform);
    if (!platform) throw hv::VmmError("--platform: expected pc or bare, got '" + a.platform + "'");
    a.opt.platform = *platform;
    if (a.paging == "shadow") a.opt.paging = hv::RunOptions::Paging::Shadow;
    else if (a.paging != "identity")
        throw hv::VmmError("--paging: expected identity or shadow, got '" + a.paging + "'");
    convert_shadow_args(a);
    // The report is renamed over the path: a FIFO or a device must not be replaced.
    if (a.opt.json_file) hv::require_regular_or_new(*a.opt.json_file, "--json");
}

// CLI11's refusal of the command line, as one "vmm: error:" line.
int report_parse_error(const CLI::App& app, const CLI::ParseError& e) {
    std::string help = "vmm --help";
    for (const CLI::App* sub : app.get_subcommands()) help = "vmm " + sub->get_name() + " --help";
    std::fprintf(stderr, "vmm: error: %s (see '%s')\n", e.what(), help.c_str());
    return hv::exit_status::kVmmError;
}

// Output stdio could not write (a full disk, /dev/full, a closed stdout)
// fails the command, which would otherwise end as if all was said.
int check_stdout(int status) {
    const bool flushed = std::fflush(stdout) == 0;
    const int err = errno;
    if (flushed && !std::ferror(stdout)) return status;
    std::fprintf(stderr, "vmm: error: cannot write to stdout: %s (expected every byte written; the output is incomplete)\n",
                 flushed ? "an earlier write failed" : std::strerror(err));
    return hv::exit_status::kVmmError;
}

// Outputs of `soft` and `bench` that their commands open later: a FIFO
// without a reader is refused now, instead of blocking them.
std::vector<hv::UniqueFd> hold_fifo_outputs(const std::vector<std::pair<std::string, const char*>>& outputs) {
    std::vector<hv::UniqueFd> held;
    for (const auto& [path, what] : outputs)
        if (!path.empty()) held.push_back(hv::hold_fifo_output(path, what));
    return held;
}

} // namespace

int main(int argc, char** argv) {
    CLI::App app{"vmm: a minimal KVM hypervisor for test guests (see README.md)"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "vmm 0.1");

    RunArgs run_args;
    auto* run = add_run_subcommand(app, run_args);
    hv::RunOptions& opt = run_args.opt;

    auto* info = app.add_subcommand("info", "Print KVM's API version, capabilities, vCPU limit and paging mode");

    hv::SoftCommandArgs soft_args;
    auto* soft = hv::add_soft_subcommand(app, soft_args);

    hv::FuzzGuestArgs fuzz_guest_args;
    auto* fuzz_guest = hv::add_fuzz_guest_subcommand(app, fuzz_guest_args);
    fuzz_guest->get_option("--timeout")->check(decimal_seconds());

    hv::BenchCommandArgs bench_args;
    const hv::BenchCommand bench = hv::add_bench_subcommand(app, bench_args);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        if (e.get_exit_code() == 0) return app.exit(e); // --help, --version
        // CLI11 stores values only once every one converts: take --json's as typed.
        if (const CLI::Option* json = run->get_option("--json"); !json->results().empty()) {
            opt.json_file = json->results().front();
            hv::write_failure_report(opt, e.what());
        }
        return report_parse_error(app, e);
    }

    bool run_started = false;
    try {
        if (info->parsed()) {
            std::fputs(hv::kvm_info_report().c_str(), stdout);
            return check_stdout(0);
        }
        if (soft->parsed()) {
            const auto options = hv::parse_soft_args(soft_args);
            const auto held = hold_fifo_outputs({{options.json, "--json"}});
            return check_stdout(hv::run_soft_command(options, stdout));
        }
        if (bench.bench->parsed()) {
            const auto held = hold_fifo_outputs({{bench_args.json, "--json"}, {bench_args.csv, "--csv"}});
            return check_stdout(hv::run_bench_command(bench, bench_args, stdout));
        }
        if (fuzz_guest->parsed()) return check_stdout(hv::run_fuzz_guest_command(fuzz_guest_args, stdout));
        convert_run_args(run_args);
        run_started = true;
        return check_stdout(hv::run_vm(opt));
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vmm: error: %s\n", e.what());
        // An option of `run` refused before run_vm (which reports its own).
        if (run->parsed() && !run_started) hv::write_failure_report(opt, e.what());
        return hv::exit_status::kVmmError;
    }
}
