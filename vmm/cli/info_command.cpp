#include "vmm/cli/info_command.hpp"

#include "vmm/kvm/kvm.hpp"

namespace hv {

std::string kvm_info_report() {
    Kvm kvm = Kvm::open();
    std::string out;
    out += "KVM API version      " + std::to_string(kvm.api_version()) + "\n";
    out += "max vCPUs            " + std::to_string(kvm.max_vcpus()) + " (KVM_CAP_MAX_VCPUS)\n";
    out += "recommended vCPUs    " + std::to_string(kvm.check_extension(KVM_CAP_NR_VCPUS)) + " (KVM_CAP_NR_VCPUS)\n";
    const TdpStatus tdp = tdp_status();
    if (tdp.module.empty())
        out += "TDP paging           unknown (no kvm_intel, kvm_amd or kvm_pvm module is visible)\n";
    else if (tdp.parameter.empty())
        out += "TDP paging           no (" + tdp.module + ": paravirtual KVM, shadow paging only)\n";
    else
        out += std::string("TDP paging           ") + (tdp.enabled ? "yes" : "no") + " (" + tdp.module + " " +
               tdp.parameter + "=" + (tdp.enabled ? "Y" : "N") + ")\n";
    out += "capabilities used:\n";
    for (const auto& c : required_capabilities()) {
        const int v = kvm.check_extension(c.id);
        out += std::string("  ") + (v ? "yes " : "NO  ") + c.name + " (" + c.why + ")\n";
    }
    return out;
}

} // namespace hv
