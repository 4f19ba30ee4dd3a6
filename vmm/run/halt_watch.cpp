#include "vmm/run/halt_watch.hpp"

#include <linux/kvm.h>

namespace hv {

VcpuRunState classify_vcpu(std::uint32_t mp_state, bool interrupts_on, bool nmi_pending) {
    if (nmi_pending) return VcpuRunState::Running; // the NMI wakes it, halted or not
    switch (mp_state) {
    case KVM_MP_STATE_UNINITIALIZED:
        return VcpuRunState::NotStarted;
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
    std::size_t never_started = 0, waiting = 0;
    for (VcpuRunState s : states) {
        if (s == VcpuRunState::Running || s == VcpuRunState::HaltedInterruptsOn) return std::nullopt;
        if (s == VcpuRunState::NotStarted) ++never_started;
        if (s == VcpuRunState::WaitingForSipi) ++waiting;
    }
    if (states.empty()) return std::nullopt;
    if (never_started + waiting == states.size())
        return "no vCPU can run: all " + std::to_string(states.size()) + " wait for INIT/SIPI";
    std::string message = "all vCPUs halted with interrupts off";
    std::string notes;
    if (never_started) notes = std::to_string(never_started) + " never started: waiting for INIT/SIPI";
    if (waiting) notes += (notes.empty() ? "" : ", ") + std::to_string(waiting) + " waiting for SIPI after INIT";
    return notes.empty() ? message : message + " (" + notes + ")";
}

} // namespace hv
