#include "vmm/run/vm.hpp"

#include "vmm/boot/boot_image.hpp"
#include "vmm/boot/boot_setup.hpp"
#include "vmm/kvm/file_util.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/run/console.hpp"
#include "vmm/run/host_checks.hpp"
#include "vmm/run/vm_machine.hpp"
#include "vmm/shadow/shadow_layout.hpp"

#include <cerrno>
#include <cstring>
#include <fstream>

namespace hv {
namespace {

// `image_kind` is set once the image is known, for the report of a failure after that.
int run_vm_unreported(const RunOptions& opt, std::optional<std::string>& image_kind) {
    validate_run_options(opt);
    const std::vector<std::uint8_t> file = read_file(opt.image, "image", opt.mem);
    const BootImage image = parse_boot_image(file, opt.image);
    image_kind = image_kind_id(image.kind);
    check_image_fits(image, opt.mem, opt.cpus, opt.image);
    if (opt.paging == RunOptions::Paging::Shadow) {
        if (image.kind != ImageKind::Elf64)
            throw VmmError("--paging shadow runs 64-bit ELF images only; '" + opt.image + "' is a " + to_string(image.kind));
        // Before /dev/kvm: a layout that cannot work is reported on any machine.
        plan_shadow_layout(opt.mem, opt.cpus, image_end(image), opt.shadow.region_size);
    }
    BootConfig config;
    config.ram_size = opt.mem;
    config.cpus = opt.cpus;
    config.cmdline = opt.cmdline;
    config.pc_firmware = opt.platform == Platform::Pc;
    if (opt.initrd) config.modules.push_back({*opt.initrd, read_file(*opt.initrd, "--initrd", opt.mem)});
    // The VM writes the console into a pipe; `output` copies it to --serial
    // or stdout and reports a failed write once the VM has closed its end.
    ConsoleOutput output(opt.serial_file);
    RunOptions vm_opt = opt;
    vm_opt.serial_file = output.vm_path();
    int status = 0;
    {
        Vm vm(vm_opt, image, std::move(config));
        status = vm.run();
    }
    output.finish();
    return status;
}

} // namespace

const char* to_string(Platform platform) { return platform == Platform::Pc ? "pc" : "bare"; }

std::optional<Platform> platform_named(std::string_view name) {
    for (Platform p : {Platform::Pc, Platform::Bare})
        if (name == to_string(p)) return p;
    return std::nullopt;
}

RunReport base_report(const RunOptions& opt) {
    RunReport r;
    r.image = opt.image;
    r.platform = to_string(opt.platform);
    r.paging = opt.paging == RunOptions::Paging::Shadow ? "shadow" : "identity";
    r.cpus = opt.cpus;
    r.mem = opt.mem;
    return r;
}

void write_failure_report(const RunOptions& opt, const std::string& message, std::optional<std::string> image_kind) {
    if (!opt.json_file) return;
    RunReport r = base_report(opt);
    r.image_kind = std::move(image_kind);
    r.end = {StopReason::VmmFailure, exit_status::kVmmError, message};
    try {
        write_run_report(*opt.json_file, r);
    } catch (const std::exception&) {
        // The run's own error is the one to report.
    }
}

int run_vm(const RunOptions& opt) {
    // An unwritable --json file is refused before anything runs.
    if (opt.json_file && !std::ofstream(*opt.json_file, std::ios::app))
        throw VmmError("--json: cannot write '" + *opt.json_file + "': " + std::strerror(errno));
    std::optional<std::string> image_kind;
    try {
        return run_vm_unreported(opt, image_kind);
    } catch (const std::exception& e) {
        write_failure_report(opt, e.what(), image_kind);
        throw;
    }
}

} // namespace hv
