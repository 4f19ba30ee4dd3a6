// The `vmm` executable: a thin CLI over the VMM library.
#include "format.hpp"
#include "info.hpp"
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
    auto* run = app.add_subcommand("run", "Boot IMAGE (static ELF64 or multiboot v1 ELF32) in a new VM");
    run->add_option("--cpus", opt.cpus, "Number of vCPUs, one thread each (1 .. KVM's maximum)")
        ->default_val(1)
        ->check(CLI::Range(0u, 1u << 20));
    run->add_option("--mem", mem_text, "Guest RAM size, with K/M/G suffix (4M .. 64G, multiple of 4K)")
        ->default_val("128M");
    run->add_option("--initrd", opt.initrd, "File passed to a multiboot image as its module");
    run->add_option("--cmdline", opt.cmdline, "Command line for the guest");
    run->add_option("--serial", opt.serial_file, "Write the serial console to FILE instead of stdout");
    run->add_option("--timeout", opt.timeout_seconds, "Stop the guest after S seconds (exit status 124); 0 = never")
        ->default_val(0);
    run->add_flag("--stats", opt.stats, "Print run statistics to stderr at the end");
    run->add_flag("--strict-io", opt.strict_io, "Stop the VM on an access to a port or address no device claims");
    run->add_option("IMAGE", opt.image, "Guest image")->required();

    auto* info = app.add_subcommand("info", "Print KVM's API version, capabilities, vCPU limit and paging mode");

    hv::SoftCommandArgs soft_args;
    auto* soft = hv::add_soft_subcommand(app, soft_args);

    try {
        app.parse(argc, argv);
    } catch (const CLI::ParseError& e) {
        const int code = app.exit(e);
        return code == 0 ? 0 : hv::exit_status::kVmmError;
    }

    try {
        if (info->parsed()) {
            std::fputs(hv::kvm_info_report().c_str(), stdout);
            return 0;
        }
        if (soft->parsed()) return hv::run_soft_command(hv::parse_soft_args(soft_args), stdout);
        auto size = hv::parse_size(mem_text);
        if (!size) throw hv::VmmError("--mem: expected a size such as 64M, 2G or 4096, got '" + mem_text + "'");
        opt.mem = *size;
        return hv::run_vm(opt);
    } catch (const hv::VmmError& e) {
        std::fprintf(stderr, "vmm: error: %s\n", e.what());
        return hv::exit_status::kVmmError;
    } catch (const std::exception& e) {
        std::fprintf(stderr, "vmm: error: %s\n", e.what());
        return hv::exit_status::kVmmError;
    }
}
