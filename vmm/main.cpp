// The `vmm` executable: a thin CLI over the VMM library.
#include "bench_command.hpp"
#include "format.hpp"
#include "fuzz_guest_command.hpp"
#include "info.hpp"
#include "mmu_options.hpp"
#include "soft_command.hpp"
#include "vm.hpp"
#include "vmm_error.hpp"

#include <CLI/CLI.hpp>
#include <cstdio>


int main(int argc, char** argv) {
    CLI::App app{"vmm: a minimal KVM hypervisor for test guests (see README.md)"};
    app.require_subcommand(1);
    app.set_version_flag("--version", "vmm 0.1");

    hv::RunOptions opt;
    std::string mem_text = "128M";
    auto* run = app.add_subcommand("run", "Boot IMAGE (Linux bzImage, static ELF64 or multiboot v1 ELF32) in a new VM");
    run->add_option("--cpus", opt.cpus, "Number of vCPUs, one thread each (1 .. KVM's maximum)")
        ->default_val(1)
        ->check(CLI::Range(0u, 1u << 20));
    run->add_option("--mem", mem_text, "Guest RAM size, with K/M/G suffix (4M .. 64G, multiple of 4K)")
        ->default_val("128M");
    run->add_option("--initrd", opt.initrd, "Initramfs of a Linux kernel, or the module of a multiboot image");
    run->add_option("--cmdline", opt.cmdline, "Command line for the guest (a Linux kernel's default: console=ttyS0)");
    run->add_option("--serial", opt.serial_file, "Write the serial console to FILE instead of stdout");
    run->add_option("--timeout", opt.timeout_seconds, "Stop the guest after S seconds (exit status 124); 0 = never")
        ->default_val(0);
    run->add_flag("--stats", opt.stats, "Print run statistics to stderr at the end");
    run->add_option("--json", opt.json_file,
                    "Write the run's result (how it ended, exits, times, peak RSS) as JSON to FILE");
    std::string platform_text = "pc";
    run->add_option("--platform", platform_text,
                    "pc: the whole PC (APICs, PIT, ACPI, MP table, fw_cfg, ...); bare: CPUs, RAM, serial port only")
        ->default_val("pc");
    run->add_flag("--strict-io", opt.strict_io, "Stop the VM on an access to a port or address no device claims");
    std::string paging_text = "identity", region_text, seed_text;
    hv::MmuPolicyArgs policy_args;
    bool strict_faults = false, skip_shootdown = false;
    run->add_option("--paging", paging_text,
                    "identity: KVM's own paging of an identity map; shadow: the guest runs on our MMU's tables")
        ->default_val("identity");
    run->add_option("--region", region_text, "Shadow mode: size of the demand-mapped region (default 32M)");
    run->add_option("--lock", policy_args.lock, "Shadow mode: MMU lock policy global, rw or split (default rw)");
    run->add_option("--coherence", policy_args.coherence, "Shadow mode: seq, ptlock or range-active (default seq)");
    run->add_option("--batch", policy_args.batch, "Shadow mode: entries zapped per lock hold; 0 = unlimited (default 512)");
    run->add_option("--churn", policy_args.churn,
                    "Shadow mode: host operations OP=RATE,... (migrate, unmap, protect, merge, swap, age) while the guest runs");
    run->add_option("--seed", seed_text, "Shadow mode: seed of the churn's page choice (default 1)");
    run->add_flag("--strict-faults", strict_faults,
                  "Shadow mode: stop the VM on a page fault the MMU cannot resolve, with a crash report");
    run->add_flag("--unsafe-skip-shootdown", skip_shootdown,
                  "Shadow mode, DEBUGGING ONLY: never flush guest TLBs after zaps (the guest sees stale memory)");
    run->add_option("IMAGE", opt.image,
                    "Guest image: a Linux bzImage, a static 64-bit ELF or a multiboot ELF32 (detected from its contents)")
        ->required();

    auto* info = app.add_subcommand("info", "Print KVM's API version, capabilities, vCPU limit and paging mode");

    hv::SoftCommandArgs soft_args;
    auto* soft = hv::add_soft_subcommand(app, soft_args);

    hv::FuzzGuestArgs fuzz_guest_args;
    auto* fuzz_guest = hv::add_fuzz_guest_subcommand(app, fuzz_guest_args);

    hv::BenchCommandArgs bench_args;
    const hv::BenchCommand bench = hv::add_bench_subcommand(app, bench_args);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int code = app.exit(e);
        // CLI11 stores values only once every one converts: take --json's as typed.
        if (const CLI::Option* json = run->get_option("--json"); code != 0 && !json->results().empty()) {
            opt.json_file = json->results().front();
            hv::write_failure_report(opt, e.what());
        }
        return code == 0 ? 0 : hv::exit_status::kVmmError;
    }

    bool run_started = false;
    try {
        if (info->parsed()) {
            std::fputs(hv::kvm_info_report().c_str(), stdout);
            return 0;
        }
        if (soft->parsed()) return hv::run_soft_command(hv::parse_soft_args(soft_args), stdout);
        if (bench.bench->parsed()) return hv::run_bench_command(bench, bench_args, stdout);
        if (fuzz_guest->parsed()) return hv::run_fuzz_guest_command(fuzz_guest_args, stdout);
        auto size = hv::parse_size(mem_text);
        if (!size) throw hv::VmmError("--mem: expected a size such as 64M, 2G or 4096, got '" + mem_text + "'");
        opt.mem = *size;
        const bool shadow_given = !region_text.empty() || !seed_text.empty() || !policy_args.lock.empty() ||
                                  !policy_args.coherence.empty() || !policy_args.batch.empty() ||
                                  !policy_args.churn.empty() || strict_faults || skip_shootdown;
        const auto platform = hv::platform_named(platform_text);
        if (!platform) throw hv::VmmError("--platform: expected pc or bare, got '" + platform_text + "'");
        opt.platform = *platform;
        if (paging_text == "shadow") opt.paging = hv::RunOptions::Paging::Shadow;
        else if (paging_text != "identity")
            throw hv::VmmError("--paging: expected identity or shadow, got '" + paging_text + "'");
        if (shadow_given && opt.paging != hv::RunOptions::Paging::Shadow)
            throw hv::VmmError("--region, --lock, --coherence, --batch, --churn, --seed, --strict-faults and "
                               "--unsafe-skip-shootdown need --paging shadow");
        hv::parse_mmu_policies(policy_args, opt.shadow.mmu, opt.shadow.churn_rate);
        if (!region_text.empty()) {
            const auto region = hv::parse_size(region_text);
            if (!region) throw hv::VmmError("--region: expected a size such as 16M or 1G, got '" + region_text + "'");
            opt.shadow.region_size = *region;
        }
        if (!seed_text.empty()) {
            const auto seed = hv::parse_u64(seed_text);
            if (!seed) throw hv::VmmError("--seed must be a non-negative integer, got '" + seed_text + "'");
            opt.shadow.seed = *seed;
        }
        opt.shadow.strict_faults = strict_faults;
        opt.shadow.skip_shootdown = skip_shootdown;
        run_started = true;
        return hv::run_vm(opt);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vmm: error: %s\n", e.what());
        // An option of `run` refused before run_vm (which reports its own).
        if (run->parsed() && !run_started) hv::write_failure_report(opt, e.what());
        return hv::exit_status::kVmmError;
    }
}
