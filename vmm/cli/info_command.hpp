#pragma once
#include <string>
namespace hv {
// The text `vmm info` prints: KVM API version, the capabilities the VMM
// uses, vCPU limits and whether KVM uses TDP paging. Throws VmmError when
// /dev/kvm cannot be opened.
std::string kvm_info_report();
} // namespace hv
