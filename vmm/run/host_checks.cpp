#include "vmm/run/host_checks.hpp"

#include "vmm/boot/guest_layout.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/run/vm.hpp"

#include <cerrno>
#include <cstring>
#include <string>
#include <sys/resource.h>

namespace hv {

// Shadow mode needs KVM to see the VMM's writes to the tables the guest
// walks: true with EPT/NPT (the tables are plain guest memory), false with
// KVM's own shadow paging, which write-protects guest page tables only
// against the guest's writes, not against ours through the host mapping.
void require_tdp() {
    const TdpStatus tdp = tdp_status();
    if (tdp.enabled) return;
    std::string found;
    if (tdp.module == "kvm_pvm") found = "kvm_pvm (paravirtualized KVM, always shadow paging)";
    else if (!tdp.module.empty()) found = tdp.module + " with " + tdp.parameter + "=N";
    else found = "no kvm_intel or kvm_amd module parameters under /sys/module";
    throw VmmError("--paging shadow needs KVM with two-dimensional paging (kvm_intel ept=Y or kvm_amd npt=Y), found " +
                   found + ": without it KVM does not see the VMM's writes to the guest's page tables");
}

// kvm_pvm boots only kernels built as PVM guests. Debian's stock kernel
// (6.1) printed nothing on it and ran until --timeout stopped it, so the
// run is refused before it starts. Where no
// KVM module is visible the image is let through: the check only refuses
// what is known not to work.
void require_kvm_for_image(ImageKind kind, const std::string& image, const std::string& sysfs_root) {
    if (kind != ImageKind::Linux) return;
    const TdpStatus kvm = tdp_status(sysfs_root);
    if (kvm.module != "kvm_pvm") return;
    throw VmmError("'" + image +
                   "' is a Linux kernel, which needs KVM on hardware virtualization (kvm_intel or kvm_amd); this host "
                   "has kvm_pvm (paravirtualized KVM), which boots only kernels built as PVM guests: a stock kernel "
                   "prints nothing there and runs until --timeout. ELF and multiboot images run on kvm_pvm; Linux "
                   "runs in a nested KVM host (scripts/nested-kvm.sh --cpus 1, see README)");
}

// Each vCPU holds a file descriptor; 1024 vCPUs exceed the usual soft limit
// of 1024 open files, so raise it up to the hard limit when needed.
void ensure_fd_limit(std::uint32_t cpus) {
    const rlim_t needed = rlim_t{cpus} + 64;
    rlimit lim{};
    if (getrlimit(RLIMIT_NOFILE, &lim) != 0 || lim.rlim_cur >= needed) return;
    if (lim.rlim_max != RLIM_INFINITY && lim.rlim_max < needed)
        throw VmmError("--cpus " + std::to_string(cpus) + " needs about " + std::to_string(needed) +
                       " file descriptors, but the hard limit is " + std::to_string(lim.rlim_max) + " (ulimit -Hn)");
    lim.rlim_cur = needed;
    if (setrlimit(RLIMIT_NOFILE, &lim) != 0)
        throw VmmError(std::string("cannot raise the open-file limit to ") + std::to_string(needed) + ": " +
                       std::strerror(errno));
}

void validate_run_options(const RunOptions& opt) {
    if (opt.cpus == 0) throw VmmError("--cpus must be at least 1 (got 0)");
    if (opt.cpus > layout::kMaxCpus)
        throw VmmError("--cpus " + std::to_string(opt.cpus) + " exceeds the VMM's maximum of " +
                       std::to_string(layout::kMaxCpus) + " vCPUs (its ACPI and MP tables and guest runtime hold that many)");
    if (opt.mem < layout::kMinRam)
        throw VmmError("--mem " + format_size(opt.mem) + " is too small; the minimum is " + format_size(layout::kMinRam));
    if (opt.mem > layout::kMaxRam)
        throw VmmError("--mem " + format_size(opt.mem) + " exceeds the maximum of " + format_size(layout::kMaxRam));
    if (opt.mem % layout::kPageSize)
        throw VmmError("--mem must be a multiple of 4 KiB (got " + std::to_string(opt.mem) + " bytes)");
    if (opt.platform == Platform::Pc && opt.mem > layout::kMaxPcRam)
        throw VmmError("--mem " + format_size(opt.mem) + " would cover the IOAPIC and local APIC at " +
                       hex(layout::kMaxPcRam) + ": on the PC platform RAM ends at or below it (at most " +
                       format_size(layout::kMaxPcRam) + "); --platform bare has no APICs and takes up to " +
                       format_size(layout::kMaxRam));
    const std::uint64_t stacks = std::uint64_t{opt.cpus} * HV_STACK_SIZE;
    if (stacks > layout::stacks_top(opt.mem) - layout::kImageStart)
        throw VmmError("--mem " + format_size(opt.mem) + " cannot hold " + std::to_string(opt.cpus) + " vCPU stacks of " +
                       format_size(HV_STACK_SIZE) + " above the reserved first MiB; raise --mem");
    if (opt.timeout_seconds < 0) throw VmmError("--timeout must not be negative");
}

} // namespace hv
