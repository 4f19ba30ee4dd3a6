// Hypercalls: hv::dispatch_exit on a 32-bit OUT to the hypercall port,
// against guest RAM holding the call block: ECHO, the error answers, and
// guest exception reports that resume or stop the VM.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "hv/abi.h"
#include "tests/support/exit_dispatch_fixture.hpp"
#include "vmm/kvm/exit_record.hpp"
#include "vmm/run/exit_dispatch.hpp"

using hv::ExitAction;
using hv::ExitRecord;
using namespace hv::test::exit_dispatch;

namespace {

// `out dx, eax` to the hypercall port with EAX = gpa.
struct Hypercall {
    std::vector<std::uint8_t> bytes;
    ExitRecord record;
    explicit Hypercall(std::uint32_t gpa) : bytes(4) {
        std::memcpy(bytes.data(), &gpa, 4);
        record = io(true, HV_HYPERCALL_PORT, bytes, 4);
    }
};

hv_call_exception exception_block(std::uint64_t vector, std::uint32_t flags) {
    hv_call_exception e{};
    e.hdr.nr = HV_CALL_EXCEPTION;
    e.hdr.size = sizeof e;
    e.vector = vector;
    e.error_code = 0x18;
    e.rip = 0x100123;
    e.cs = HV_GDT_CODE64;
    e.rflags = 0x10046;
    e.rsp = 0x1ff000;
    e.ss = HV_GDT_DATA;
    e.cr2 = 0xdead000;
    for (int i = 0; i < HV_NGPRS; ++i) e.gprs[i] = 0x1000 + i;
    e.flags = flags;
    return e;
}

} // namespace

// ---------------------------------------------------------------------------
// Hypercalls through the port

TEST_CASE("dispatch_exit: ECHO hypercall answers out = in + 1 and HV_OK in RAX") {
    Machine m;
    hv_call_echo echo{};
    echo.hdr = {HV_CALL_ECHO, sizeof echo};
    echo.in = 41;
    REQUIRE(m.memory.write_obj(0x8000, echo));
    Hypercall call(0x8000);
    const ExitAction a = m.dispatch(call.record);
    CHECK(a.kind == ExitAction::Kind::Resume);
    REQUIRE(a.set_rax.has_value());
    CHECK(*a.set_rax == HV_OK);
    const auto after = m.memory.read_obj<hv_call_echo>(0x8000);
    REQUIRE(after);
    CHECK(after->out == 42);
    CHECK(after->in == 41);
    CHECK_FALSE(m.stop.stopped());
}

TEST_CASE("dispatch_exit: hypercall block outside RAM -> HV_E_FAULT") {
    Machine m;
    Hypercall call(static_cast<std::uint32_t>(kRam + 0x1000));
    const ExitAction a = m.dispatch(call.record);
    CHECK(a.kind == ExitAction::Kind::Resume);
    CHECK(a.set_rax == std::optional<std::uint64_t>(HV_E_FAULT));
    CHECK_FALSE(m.stop.stopped());
}

TEST_CASE("dispatch_exit: unknown hypercall number -> HV_E_UNKNOWN_CALL") {
    Machine m;
    hv_call_header h{77, sizeof h};
    REQUIRE(m.memory.write_obj(0x8000, h));
    Hypercall call(0x8000);
    CHECK(m.dispatch(call.record).set_rax == std::optional<std::uint64_t>(HV_E_UNKNOWN_CALL));
}

TEST_CASE("dispatch_exit: hypercall with a wrong size -> HV_E_BAD_SIZE, block untouched") {
    Machine m;
    hv_call_echo echo{};
    echo.hdr = {HV_CALL_ECHO, sizeof echo - 8};
    echo.in = 1;
    echo.out = 0x5555;
    REQUIRE(m.memory.write_obj(0x8000, echo));
    Hypercall call(0x8000);
    CHECK(m.dispatch(call.record).set_rax == std::optional<std::uint64_t>(HV_E_BAD_SIZE));
    CHECK(m.memory.read_obj<hv_call_echo>(0x8000)->out == 0x5555);
}

TEST_CASE("dispatch_exit: only a 32-bit OUT is a hypercall") {
    Machine m;
    hv_call_echo echo{};
    echo.hdr = {HV_CALL_ECHO, sizeof echo};
    echo.in = 1;
    REQUIRE(m.memory.write_obj(0x8000, echo));
    std::vector<std::uint8_t> word = {0x00, 0x80}; // out dx, ax with AX = 0x8000
    ExitAction a = m.dispatch(io(true, HV_HYPERCALL_PORT, word, 2));
    CHECK_FALSE(a.set_rax.has_value());
    std::vector<std::uint8_t> in(4, 0);
    a = m.dispatch(io(false, HV_HYPERCALL_PORT, in, 4)); // in eax, dx
    CHECK_FALSE(a.set_rax.has_value());
    CHECK(in == std::vector<std::uint8_t>(4, 0xff));
    CHECK(m.memory.read_obj<hv_call_echo>(0x8000)->out == 0);
}

TEST_CASE("dispatch_exit: a recoverable guest exception is logged and the guest resumes") {
    Machine m;
    REQUIRE(m.memory.write_obj(0x9000, exception_block(14, HV_EXC_RECOVERABLE)));
    Hypercall call(0x9000);
    ExitRecord r = call.record;
    r.vcpu = 3;
    const ExitAction a = m.dispatch(r);
    CHECK(a.kind == ExitAction::Kind::Resume);
    CHECK(a.set_rax == std::optional<std::uint64_t>(HV_OK));
    CHECK_FALSE(a.crash_report);
    CHECK_FALSE(m.stop.stopped());
    REQUIRE(m.log.size() == 1);
    CAPTURE(m.log[0]);
    CHECK(contains(m.log[0], "vcpu 3"));
    CHECK(contains(m.log[0], "#PF"));
    CHECK(contains(m.log[0], "vector 14"));
    CHECK(contains(m.log[0], "cr2=0xdead000"));
    CHECK(contains(m.log[0], "rip=0x100123"));
}

TEST_CASE("dispatch_exit: an unrecoverable guest exception stops the VM with the guest's frame") {
    Machine m;
    const hv_call_exception e = exception_block(13, 0);
    REQUIRE(m.memory.write_obj(0x9000, e));
    Hypercall call(0x9000);
    const ExitAction a = m.dispatch(call.record);
    check_crash(m, a, "#GP");
    CHECK(contains(m.stop.state().message, "error_code=0x18"));
    REQUIRE(a.guest_frame.has_value());
    CHECK(a.guest_frame->vector == 13);
    CHECK(a.guest_frame->rip == 0x100123);
    CHECK(a.guest_frame->rsp == 0x1ff000);
    CHECK(a.guest_frame->gprs[HV_R15] == 0x1000 + HV_R15);
    CHECK(std::memcmp(&*a.guest_frame, &e, sizeof e) == 0);
}

// ---------------------------------------------------------------------------
// Guest-triggered log lines are limited (GuestLog)

TEST_CASE("dispatch_exit: 200000 recoverable exception reports log the first few, then one count at the end") {
    Machine m;
    REQUIRE(m.memory.write_obj(0x9000, exception_block(6, HV_EXC_RECOVERABLE)));
    Hypercall call(0x9000);
    int resumed = 0;
    for (int i = 0; i < 200000; ++i) {
        const ExitAction a = m.dispatch(call.record);
        resumed += a.kind == ExitAction::Kind::Resume && a.set_rax == std::optional<std::uint64_t>(HV_OK);
    }
    CHECK(resumed == 200000);
    CHECK_FALSE(m.stop.stopped());
    REQUIRE(m.log.size() == hv::GuestLog::kListed);
    CHECK(contains(m.log[0], "guest exception #UD (vector 6)"));
    CHECK(contains(m.log[0], "(handled by the guest)"));
    REQUIRE(m.ctx.guest_log);
    m.ctx.guest_log->finish();
    REQUIRE(m.log.size() == hv::GuestLog::kListed + 1);
    CHECK(m.log.back() == "... and " + std::to_string(200000 - hv::GuestLog::kListed) +
                              " more guest exception reports (suppressed)");
}

TEST_CASE("dispatch_exit: a context left without a GuestLog makes one, which prints its count when it goes") {
    Machine m;
    CHECK_FALSE(m.ctx.guest_log);
    REQUIRE(m.memory.write_obj(0x9000, exception_block(13, HV_EXC_RECOVERABLE)));
    Hypercall call(0x9000);
    for (std::uint64_t i = 0; i < hv::GuestLog::kListed + 5; ++i) m.dispatch(call.record);
    CHECK(m.log.size() == hv::GuestLog::kListed);
    REQUIRE(m.ctx.guest_log.use_count() == 1);
    m.ctx.guest_log.reset(); // as when the vCPU's context ends
    REQUIRE(m.log.size() == hv::GuestLog::kListed + 1);
    CHECK(m.log.back() == "... and 5 more guest exception reports (suppressed)");
}

TEST_CASE("dispatch_exit: the vCPUs of a VM share one GuestLog and its limit") {
    Machine m;
    auto shared = std::make_shared<hv::GuestLog>(m.ctx.log, 4);
    m.ctx.guest_log = shared;
    hv::ExitContext other = m.ctx; // another vCPU's context of the same VM
    REQUIRE(m.memory.write_obj(0x9000, exception_block(14, HV_EXC_RECOVERABLE)));
    Hypercall call(0x9000);
    for (int i = 0; i < 3; ++i) {
        m.dispatch(call.record);
        hv::dispatch_exit(call.record, other);
    }
    CHECK(m.log.size() == 4);
    CHECK(shared->suppressed("guest exception reports") == 2);
    shared->finish();
    CHECK(m.log.back() == "... and 2 more guest exception reports (suppressed)");
}
