#include "halt_watch.hpp"

#include <linux/kvm.h>

namespace hv {

VcpuRunState classify_vcpu(std::uint32_t mp_state, bool interrupts_on) {
    switch (mp_state) {
    case KVM_MP_STATE_UNINITIALIZED:
    case KVM_MP_STATE_INIT_RECEIVED:
    case KVM_MP_STATE_AP_RESET_HOLD:
        return VcpuRunState::WaitingForSipi;
    case KVM_MP_STATE_HALTED:
        return interrupts_on ? VcpuRunState::HaltedInterruptsOn : VcpuRunState::HaltedInterruptsOff;
    default:
        return VcpuRunState::Running;
    }
}

std::optional<std::string> stuck_vm_message(std::span<const VcpuRunState> states) {
    std::size_t waiting = 0;
    for (VcpuRunState s : states) {
        if (s == VcpuRunState::Running || s == VcpuRunState::HaltedInterruptsOn) return std::nullopt;
        if (s == VcpuRunState::WaitingForSipi) ++waiting;
    }
    if (states.empty()) return std::nullopt;
    if (waiting == 0) return std::string("all vCPUs halted with interrupts off");
    if (waiting == states.size())
        return "no vCPU can run: all " + std::to_string(waiting) + " wait for INIT/SIPI";
    return "all vCPUs halted with interrupts off (" + std::to_string(waiting) +
           " never started: waiting for INIT/SIPI)";
}

std::string format_vcpu_list(std::span<const std::uint32_t> sorted) {
    std::string out;
    for (std::size_t i = 0; i < sorted.size();) {
        std::size_t j = i;
        while (j + 1 < sorted.size() && sorted[j + 1] == sorted[j] + 1) ++j;
        if (!out.empty()) out += ", ";
        out += std::to_string(sorted[i]);
        if (j > i) out += "-" + std::to_string(sorted[j]);
        i = j + 1;
    }
    return out;
}

} // namespace hv
