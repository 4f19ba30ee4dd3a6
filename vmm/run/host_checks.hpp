#pragma once
// What `vmm run` checks of the host before it builds a VM: that KVM has
// two-dimensional paging when shadow mode needs it, that it can boot the
// image's kind at all, and that the open-file limit leaves room for one fd
// per vCPU. (validate_run_options, the checks
// of the options themselves, is declared in vm.hpp and defined here too.)
#include "vmm/boot/boot_image.hpp"

#include <cstdint>
#include <string>

namespace hv {

// Throws VmmError naming the KVM module and parameter found.
void require_tdp();
// Before guest RAM or /dev/kvm: throws VmmError for an image this host's KVM
// cannot run, naming the KVM found and what the image needs. So far one
// case: a Linux bzImage on kvm_pvm (read from `sysfs_root` as tdp_status()
// does), which boots only kernels built as PVM guests; a stock kernel
// printed nothing there and spun until --timeout.
void require_kvm_for_image(ImageKind kind, const std::string& image, const std::string& sysfs_root = "/sys/module");
// Raises the soft RLIMIT_NOFILE for `cpus` vCPUs, up to the hard limit; throws when that is too low.
void ensure_fd_limit(std::uint32_t cpus);

} // namespace hv
