#pragma once
// Whether a VM can still run, when HLT does not leave KVM. With the
// in-kernel local APIC (the PC platform) a vCPU that halts, or that waits
// for INIT/SIPI, sleeps inside KVM_RUN, so the VMM cannot count halted
// vCPUs from their exits as it does on the bare platform. Instead, after an
// interval in which no vCPU left KVM_RUN, the VM kicks every vCPU thread,
// which reads its own state (KVM_GET_MP_STATE waits for a vCPU that is
// inside KVM_RUN) and answers; the judgement below then says whether
// anything could still wake a vCPU.
#include <chrono>
#include <cstdint>
#include <optional>
#include <span>
#include <string>

namespace hv {

enum class VcpuRunState : std::uint8_t {
    Running,            // runnable, or in a state this judgement does not know
    HaltedInterruptsOff,
    HaltedInterruptsOn, // a timer, a device or an IPI may still wake it
    WaitingForSipi,     // never started, or INIT received and no SIPI yet
};

// From KVM_GET_MP_STATE's value and RFLAGS.IF.
VcpuRunState classify_vcpu(std::uint32_t mp_state, bool interrupts_on);

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

// "1-3, 7, 9-10": vCPU indices in ascending order, runs collapsed.
std::string format_vcpu_list(std::span<const std::uint32_t> sorted);

} // namespace hv
