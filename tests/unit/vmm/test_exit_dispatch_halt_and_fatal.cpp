// HLT and fatal exits: hv::dispatch_exit halting or parking the vCPU, and
// stopping the VM on a triple fault, a KVM internal error, a failed VM
// entry, a system event or an unknown exit; plus hv::decode_exit of those
// exit reasons over a hand-filled kvm_run.
#include <doctest/doctest.h>

#include <cstdint>
#include <linux/kvm.h>
#include <span>
#include <string>
#include <vector>

#include "hv/abi.h"
#include "tests/support/exit_dispatch_fixture.hpp"
#include "vmm/kvm/exit_record.hpp"
#include "vmm/kvm/stop_latch.hpp"
#include "vmm/run/exit_dispatch.hpp"

using hv::ExitAction;
using hv::ExitKind;
using hv::ExitRecord;
using hv::StopReason;
using namespace hv::test::exit_dispatch;

namespace {

ExitRecord simple(ExitKind kind, std::uint32_t raw, std::uint64_t detail = 0) {
    ExitRecord r;
    r.kind = kind;
    r.raw_reason = raw;
    r.detail = detail;
    return r;
}

} // namespace

// ---------------------------------------------------------------------------
// HLT and fatal exits

TEST_CASE("dispatch_exit: HLT with interrupts off halts the vCPU") {
    Machine m;
    ExitRecord r = simple(ExitKind::Hlt, KVM_EXIT_HLT);
    r.rflags = 0x2; // IF (bit 9) clear
    const ExitAction a = m.dispatch(r);
    CHECK(a.kind == ExitAction::Kind::Halted);
    CHECK_FALSE(a.crash_report);
    CHECK_FALSE(m.stop.stopped()); // the VM ends only when every vCPU halted
}

TEST_CASE("dispatch_exit: HLT with interrupts on parks the vCPU") {
    Machine m;
    ExitRecord r = simple(ExitKind::Hlt, KVM_EXIT_HLT);
    r.rflags = 0x202; // IF set
    const ExitAction a = m.dispatch(r);
    CHECK(a.kind == ExitAction::Kind::Park);
    CHECK_FALSE(m.stop.stopped());
}

TEST_CASE("dispatch_exit: triple fault (shutdown) is a guest crash") {
    Machine m;
    check_crash(m, m.dispatch(simple(ExitKind::Shutdown, KVM_EXIT_SHUTDOWN)), "triple fault");
}

TEST_CASE("dispatch_exit: KVM internal error is a guest crash naming the suberror") {
    Machine m;
    check_crash(m, m.dispatch(simple(ExitKind::InternalError, KVM_EXIT_INTERNAL_ERROR, KVM_INTERNAL_ERROR_EMULATION)),
                "suberror " + std::to_string(KVM_INTERNAL_ERROR_EMULATION));
    CHECK(contains(m.stop.state().message, "emulation"));

    Machine m2;
    check_crash(m2, m2.dispatch(simple(ExitKind::InternalError, KVM_EXIT_INTERNAL_ERROR, 99)), "suberror 99");
}

TEST_CASE("dispatch_exit: failed VM entry is a guest crash with the hardware reason") {
    Machine m;
    // VMX basic exit reason 33: "VM-entry failure due to invalid guest state", with bit 31 set.
    check_crash(m, m.dispatch(simple(ExitKind::FailEntry, KVM_EXIT_FAIL_ENTRY, 0x80000021)), "0x80000021");
}

TEST_CASE("dispatch_exit: system event (power-off) is a clean shutdown with status 0") {
    Machine m;
    const ExitAction a = m.dispatch(simple(ExitKind::SystemEvent, KVM_EXIT_SYSTEM_EVENT, KVM_SYSTEM_EVENT_SHUTDOWN));
    CHECK(a.kind == ExitAction::Kind::Stop);
    CHECK_FALSE(a.crash_report);
    CHECK(m.stop.state().reason == StopReason::GuestShutdown);
    CHECK(m.stop.state().status == 0);

    Machine m2;
    m2.dispatch(simple(ExitKind::SystemEvent, KVM_EXIT_SYSTEM_EVENT, KVM_SYSTEM_EVENT_RESET));
    CHECK(m2.stop.state().reason == StopReason::GuestShutdown);
    CHECK(contains(m2.stop.state().message, "reset"));
}

TEST_CASE("dispatch_exit: an unknown exit is a guest crash naming the raw reason") {
    Machine m;
    check_crash(m, m.dispatch(simple(ExitKind::Unknown, 1234)), "1234");
}

TEST_CASE("dispatch_exit: a crash after another stop reason does not replace it") {
    Machine m;
    std::uint8_t value = 5;
    m.dispatch(io(true, HV_DEBUG_EXIT_PORT, std::span(&value, 1), 1));
    const ExitAction a = m.dispatch(simple(ExitKind::Shutdown, KVM_EXIT_SHUTDOWN));
    CHECK(a.kind == ExitAction::Kind::Stop);
    CHECK(m.stop.state().reason == StopReason::DebugExit);
    CHECK(m.stop.state().status == 5);
}

// ---------------------------------------------------------------------------
// decode_exit over a kvm_run page filled by hand

TEST_CASE("decode_exit: HLT, shutdown, failures and unknown reasons") {
    std::vector<std::uint8_t> page(4096, 0);
    auto& run = *reinterpret_cast<kvm_run*>(page.data());
    run.exit_reason = KVM_EXIT_HLT;
    CHECK(hv::decode_exit(run, page.size(), 0).kind == ExitKind::Hlt);
    run.exit_reason = KVM_EXIT_SHUTDOWN;
    CHECK(hv::decode_exit(run, page.size(), 0).kind == ExitKind::Shutdown);
    run.exit_reason = KVM_EXIT_FAIL_ENTRY;
    run.fail_entry.hardware_entry_failure_reason = 0x80000021;
    ExitRecord r = hv::decode_exit(run, page.size(), 0);
    CHECK(r.kind == ExitKind::FailEntry);
    CHECK(r.detail == 0x80000021);
    run.exit_reason = KVM_EXIT_INTERNAL_ERROR;
    run.internal.suberror = KVM_INTERNAL_ERROR_EMULATION;
    r = hv::decode_exit(run, page.size(), 0);
    CHECK(r.kind == ExitKind::InternalError);
    CHECK(r.detail == KVM_INTERNAL_ERROR_EMULATION);
    run.exit_reason = 9999;
    r = hv::decode_exit(run, page.size(), 0);
    CHECK(r.kind == ExitKind::Unknown);
    CHECK(r.raw_reason == 9999);
}
