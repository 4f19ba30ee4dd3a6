// hv::classify_vcpu, stuck_vm_message and HaltWatchInterval: how `vmm run`
// on the PC platform decides that nothing can wake any vCPU
// (KVM_GET_MP_STATE values from linux/kvm.h).
#include <doctest/doctest.h>

#include <linux/kvm.h>
#include <vector>

#include "vmm/run/halt_watch.hpp"

using hv::VcpuRunState;

TEST_CASE("classify_vcpu: KVM's MP states, RFLAGS.IF and a pending NMI") {
    CHECK(hv::classify_vcpu(KVM_MP_STATE_RUNNABLE, false, false) == VcpuRunState::Running);
    CHECK(hv::classify_vcpu(KVM_MP_STATE_RUNNABLE, true, false) == VcpuRunState::Running);
    CHECK(hv::classify_vcpu(KVM_MP_STATE_UNINITIALIZED, false, false) == VcpuRunState::NotStarted);
    CHECK(hv::classify_vcpu(KVM_MP_STATE_INIT_RECEIVED, true, false) == VcpuRunState::WaitingForSipi);
    CHECK(hv::classify_vcpu(KVM_MP_STATE_HALTED, false, false) == VcpuRunState::HaltedInterruptsOff);
    CHECK(hv::classify_vcpu(KVM_MP_STATE_HALTED, true, false) == VcpuRunState::HaltedInterruptsOn);
    CHECK(hv::classify_vcpu(KVM_MP_STATE_HALTED, false, true) == VcpuRunState::Running); // the NMI wakes it
    CHECK(hv::classify_vcpu(KVM_MP_STATE_SIPI_RECEIVED, false, false) == VcpuRunState::Running); // about to start
    CHECK(hv::classify_vcpu(12345, false, false) == VcpuRunState::Running); // unknown: assume it can run
}

TEST_CASE("stuck_vm_message: only when every vCPU is halted with interrupts off or waits for INIT/SIPI") {
    using S = VcpuRunState;
    CHECK(hv::stuck_vm_message(std::vector<S>{}) == std::nullopt);
    CHECK(hv::stuck_vm_message(std::vector{S::HaltedInterruptsOff, S::HaltedInterruptsOff}) ==
          "all vCPUs halted with interrupts off");
    CHECK(hv::stuck_vm_message(std::vector{S::HaltedInterruptsOff, S::NotStarted, S::NotStarted}) ==
          "all vCPUs halted with interrupts off (2 never started: waiting for INIT/SIPI)");
    CHECK(hv::stuck_vm_message(std::vector{S::HaltedInterruptsOff, S::NotStarted, S::WaitingForSipi}) ==
          "all vCPUs halted with interrupts off (1 never started: waiting for INIT/SIPI, 1 waiting for SIPI after INIT)");
    CHECK(hv::stuck_vm_message(std::vector{S::NotStarted, S::WaitingForSipi}) ==
          "no vCPU can run: all 2 wait for INIT/SIPI");
    // Anything that can still run, or be woken by a timer, a device or an IPI, keeps the VM alive.
    CHECK(hv::stuck_vm_message(std::vector{S::HaltedInterruptsOff, S::Running}) == std::nullopt);
    CHECK(hv::stuck_vm_message(std::vector{S::HaltedInterruptsOn, S::HaltedInterruptsOff}) == std::nullopt);
    CHECK(hv::stuck_vm_message(std::vector{S::WaitingForSipi, S::HaltedInterruptsOn}) == std::nullopt);
}

TEST_CASE("HaltWatchInterval: doubles while the VM can run, up to 4 s, and is short again after exits") {
    hv::HaltWatchInterval i;
    CHECK(i.current() == std::chrono::milliseconds(250));
    i.vm_can_run();
    CHECK(i.current() == std::chrono::milliseconds(500));
    for (int n = 0; n < 10; ++n) i.vm_can_run();
    CHECK(i.current() == std::chrono::milliseconds(4000));
    i.exits_seen();
    CHECK(i.current() == std::chrono::milliseconds(250));
}
