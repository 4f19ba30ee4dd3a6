#pragma once
// Whether a VM can still run, when HLT does not leave KVM. With the
// in-kernel local APIC (the PC platform) a vCPU that halts, or that waits
// for INIT/SIPI, sleeps inside KVM_RUN, so the VMM cannot count halted
// vCPUs from their exits as it does on the bare platform. Instead, after an
// interval in which no vCPU left KVM_RUN, the VM kicks every vCPU thread
// out of KVM_RUN and holds it there until all are out, so that no guest
// code runs while it reads their states (KVM_GET_MP_STATE, which also
// takes in pending INIT and SIPI; RFLAGS.IF; a pending NMI): one moment's
// picture, which the judgement below turns into a verdict.
#include <algorithm>
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace hv {

enum class VcpuRunState : std::uint8_t {
    Running,            // runnable, an NMI waits for it, or a state this judgement does not know
    HaltedInterruptsOff,
    HaltedInterruptsOn, // a timer, a device or an IPI may still wake it
    NotStarted,         // never left the reset state: waits for INIT/SIPI
    WaitingForSipi,     // INIT received (before its first SIPI, or sent back there), no SIPI yet
};

// From KVM_GET_MP_STATE's value, RFLAGS.IF and whether an NMI is pending.
VcpuRunState classify_vcpu(std::uint32_t mp_state, bool interrupts_on, bool nmi_pending);

// When every vCPU is halted with interrupts off or waits for INIT/SIPI,
// nothing can wake any of them (only a running or halted-with-interrupts-on
// vCPU could send an IPI, and devices' interrupts are masked by IF=0): the
// message that ends the VM, e.g. "all vCPUs halted with interrupts off (2
// never started: waiting for INIT/SIPI)". nullopt while one can still run.
std::optional<std::string> stuck_vm_message(std::span<const VcpuRunState> states);

// How long to wait without exits before asking the vCPUs: short at first,
// doubling each time the answer was that some vCPU can still run (a guest
// that computes or sleeps without exits is not asked ever more often), back
// to short once vCPUs exit again.
class HaltWatchInterval {
public:
    static constexpr std::chrono::milliseconds kFirst{250}, kMax{4000};
    std::chrono::milliseconds current() const { return current_; }
    void exits_seen() { current_ = kFirst; }
    void vm_can_run() { current_ = std::min(current_ * 2, kMax); }

private:
    std::chrono::milliseconds current_ = kFirst;
};

} // namespace hv
