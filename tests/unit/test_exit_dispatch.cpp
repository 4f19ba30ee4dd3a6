// hv::dispatch_exit driven with synthetic ExitRecords against real devices
// (Bus, Serial16550, DebugExit) wired as vm.cpp wires them, plus
// hv::decode_exit over a hand-filled kvm_run.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <linux/kvm.h>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "bus.hpp"
#include "debug_exit.hpp"
#include "exit_dispatch.hpp"
#include "exit_record.hpp"
#include "guest_memory.hpp"
#include "hv/abi.h"
#include "serial16550.hpp"
#include "stop_latch.hpp"
#include "vmm_error.hpp"

using hv::ExitAction;
using hv::ExitKind;
using hv::ExitRecord;
using hv::StopReason;

namespace {

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

// A device that records every access; reads answer 0x10, 0x11, 0x12, ...
class Recorder final : public hv::IoDevice {
public:
    struct Access {
        bool is_write;
        std::uint64_t offset;
        std::vector<std::uint8_t> bytes;
    };
    void read(std::uint64_t offset, std::span<std::uint8_t> data) override {
        for (auto& b : data) b = next_++;
        accesses.push_back({false, offset, {data.begin(), data.end()}});
    }
    void write(std::uint64_t offset, std::span<const std::uint8_t> data) override {
        accesses.push_back({true, offset, {data.begin(), data.end()}});
    }
    std::vector<Access> accesses;

private:
    std::uint8_t next_ = 0x10;
};

constexpr std::uint64_t kRam = 2 << 20;
constexpr std::uint64_t kRecorderPort = 0x600;
constexpr std::uint64_t kRecorderMmio = 0xd0000000;

// The devices of a VM, wired like vm.cpp's Vm constructor.
struct Machine {
    hv::GuestMemory memory{kRam};
    hv::StopLatch stop;
    std::string serial_out;
    int debug_exit_calls = 0;
    hv::Serial16550 serial{[this](std::span<const std::uint8_t> b) { serial_out.append(b.begin(), b.end()); }};
    hv::DebugExit debug_exit{[this](std::uint32_t value) {
        ++debug_exit_calls;
        stop.request(StopReason::DebugExit, hv::debug_exit_status(value),
                     "guest wrote " + std::to_string(value) + " to the debug-exit port");
    }};
    Recorder port_recorder, mmio_recorder;
    hv::Bus ports{"port"};
    hv::Bus mmio{"mmio"};
    std::vector<std::string> bus_log; // the buses' unclaimed-access lines
    std::vector<std::string> log;     // ExitContext::log
    hv::ExitContext ctx{ports, mmio, memory, stop, false, [this](std::string_view l) { log.emplace_back(l); }};

    Machine() {
        ports.add(HV_SERIAL_PORT, hv::Serial16550::size, serial, "serial0");
        ports.add(HV_DEBUG_EXIT_PORT, hv::DebugExit::size, debug_exit, "debug-exit");
        ports.add(kRecorderPort, 8, port_recorder, "recorder");
        mmio.add(kRecorderMmio, 0x1000, mmio_recorder, "mmio-recorder");
        auto sink = [this](std::string_view l) { bus_log.emplace_back(l); };
        ports.set_unclaimed_sink(sink);
        mmio.set_unclaimed_sink(sink);
    }
    ExitAction dispatch(const ExitRecord& r) { return hv::dispatch_exit(r, ctx); }
};

ExitRecord io(bool is_write, std::uint16_t port, std::span<std::uint8_t> data, std::uint32_t size,
              std::uint32_t count = 1) {
    ExitRecord r;
    r.kind = ExitKind::Io;
    r.raw_reason = KVM_EXIT_IO;
    r.is_write = is_write;
    r.address = port;
    r.size = size;
    r.count = count;
    r.data = data;
    return r;
}

ExitRecord mmio(bool is_write, std::uint64_t gpa, std::span<std::uint8_t> data) {
    ExitRecord r;
    r.kind = ExitKind::Mmio;
    r.raw_reason = KVM_EXIT_MMIO;
    r.is_write = is_write;
    r.address = gpa;
    r.size = static_cast<std::uint32_t>(data.size());
    r.data = data;
    return r;
}

ExitRecord simple(ExitKind kind, std::uint32_t raw, std::uint64_t detail = 0) {
    ExitRecord r;
    r.kind = kind;
    r.raw_reason = raw;
    r.detail = detail;
    return r;
}

// `out dx, eax` to the hypercall port with EAX = gpa.
struct Hypercall {
    std::vector<std::uint8_t> bytes;
    ExitRecord record;
    explicit Hypercall(std::uint32_t gpa) : bytes(4) {
        std::memcpy(bytes.data(), &gpa, 4);
        record = io(true, HV_HYPERCALL_PORT, bytes, 4);
    }
};

void check_crash(const Machine& m, const ExitAction& a, const std::string& message_part) {
    CHECK(a.kind == ExitAction::Kind::Stop);
    CHECK(a.crash_report);
    const hv::StopState st = m.stop.state();
    CHECK(st.reason == StopReason::GuestCrash);
    CHECK(st.status == hv::exit_status::kGuestCrash);
    CAPTURE(st.message);
    CHECK(contains(st.message, message_part));
}

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
// Port I/O to devices

TEST_CASE("dispatch_exit: serial writes reach the output sink") {
    Machine m;
    for (char c : std::string("hi\n")) {
        std::uint8_t byte = static_cast<std::uint8_t>(c);
        const ExitAction a = m.dispatch(io(true, HV_SERIAL_PORT, std::span(&byte, 1), 1));
        CHECK(a.kind == ExitAction::Kind::Resume);
        CHECK_FALSE(a.crash_report);
        CHECK_FALSE(a.set_rax.has_value());
    }
    CHECK(m.serial_out == "hi\n"); // the UART hands a line over at '\n'
    CHECK_FALSE(m.stop.stopped());
    CHECK(m.bus_log.empty());
}

TEST_CASE("dispatch_exit: serial line status read reports the transmitter empty") {
    // LSR (offset 5) bits 5 (THRE) and 6 (TEMT): the 8250 driver polls these before writing.
    Machine m;
    std::uint8_t lsr = 0;
    m.dispatch(io(false, HV_SERIAL_PORT + 5, std::span(&lsr, 1), 1));
    CHECK((lsr & 0x60) == 0x60);
}

TEST_CASE("dispatch_exit: debug-exit write stops the latch with the guest's status") {
    Machine m;
    std::uint8_t value = 42;
    const ExitAction a = m.dispatch(io(true, HV_DEBUG_EXIT_PORT, std::span(&value, 1), 1));
    CHECK_FALSE(a.crash_report);
    CHECK(a.kind != ExitAction::Kind::Halted);
    const hv::StopState st = m.stop.state();
    CHECK(st.reason == StopReason::DebugExit);
    CHECK(st.status == 42);
    CHECK(contains(st.message, "42"));
}

TEST_CASE("dispatch_exit: debug-exit values above 123 clamp to 123") {
    Machine m;
    std::uint8_t value = 200;
    m.dispatch(io(true, HV_DEBUG_EXIT_PORT, std::span(&value, 1), 1));
    CHECK(m.stop.state().reason == StopReason::DebugExit);
    CHECK(m.stop.state().status == 123);

    Machine m2;
    std::vector<std::uint8_t> dword = {0x00, 0x01, 0x00, 0x00}; // 256 as a 32-bit OUT
    m2.dispatch(io(true, HV_DEBUG_EXIT_PORT, dword, 4));
    CHECK(m2.stop.state().status == 123);
}

TEST_CASE("dispatch_exit: string I/O (rep outsw) hits the device once per element, in order") {
    Machine m;
    std::vector<std::uint8_t> data = {0x01, 0x02, 0x03, 0x04, 0x05, 0x06};
    const ExitAction a = m.dispatch(io(true, kRecorderPort + 2, data, 2, 3));
    CHECK(a.kind == ExitAction::Kind::Resume);
    REQUIRE(m.port_recorder.accesses.size() == 3);
    for (std::size_t i = 0; i < 3; ++i) {
        CAPTURE(i);
        CHECK(m.port_recorder.accesses[i].is_write);
        CHECK(m.port_recorder.accesses[i].offset == 2);
        CHECK(m.port_recorder.accesses[i].bytes ==
              std::vector<std::uint8_t>{static_cast<std::uint8_t>(2 * i + 1), static_cast<std::uint8_t>(2 * i + 2)});
    }
}

TEST_CASE("dispatch_exit: string input (rep insb) fills each element from the device") {
    Machine m;
    std::vector<std::uint8_t> data(4, 0);
    m.dispatch(io(false, kRecorderPort, data, 1, 4));
    CHECK(m.port_recorder.accesses.size() == 4);
    CHECK(data == std::vector<std::uint8_t>{0x10, 0x11, 0x12, 0x13});
}

TEST_CASE("dispatch_exit: rep outsb to the serial port transmits every byte") {
    Machine m;
    std::string text = "hello\n";
    std::vector<std::uint8_t> data(text.begin(), text.end());
    m.dispatch(io(true, HV_SERIAL_PORT, data, 1, static_cast<std::uint32_t>(data.size())));
    CHECK(m.serial_out == "hello\n");
}

TEST_CASE("dispatch_exit: string I/O stops repeating once the VM is stopping") {
    Machine m;
    std::vector<std::uint8_t> data = {7, 8, 9, 10};
    m.dispatch(io(true, HV_DEBUG_EXIT_PORT, data, 1, 4));
    CHECK(m.debug_exit_calls == 1);
    CHECK(m.stop.state().status == 7); // the first value wins
}

// ---------------------------------------------------------------------------
// Unclaimed accesses

TEST_CASE("dispatch_exit: unclaimed port read returns all ones and continues, logged once") {
    Machine m;
    std::vector<std::uint8_t> data = {0x00, 0x12, 0x34, 0x56};
    ExitAction a = m.dispatch(io(false, 0x80, data, 4));
    CHECK(a.kind == ExitAction::Kind::Resume);
    CHECK_FALSE(a.crash_report);
    CHECK(data == std::vector<std::uint8_t>{0xff, 0xff, 0xff, 0xff});
    REQUIRE(m.bus_log.size() == 1);
    CHECK(contains(m.bus_log[0], "0x80"));

    data.assign(4, 0);
    a = m.dispatch(io(false, 0x80, data, 4));
    CHECK(a.kind == ExitAction::Kind::Resume);
    CHECK(data == std::vector<std::uint8_t>{0xff, 0xff, 0xff, 0xff});
    CHECK(m.bus_log.size() == 1); // same port: not logged again
    CHECK_FALSE(m.stop.stopped());
}

TEST_CASE("dispatch_exit: unclaimed port write is ignored without --strict-io") {
    Machine m;
    std::uint8_t byte = 0x55;
    const ExitAction a = m.dispatch(io(true, 0x70, std::span(&byte, 1), 1));
    CHECK(a.kind == ExitAction::Kind::Resume);
    CHECK(m.bus_log.size() == 1);
    CHECK_FALSE(m.stop.stopped());
}

TEST_CASE("dispatch_exit: --strict-io stops on an unclaimed port read") {
    Machine m;
    m.ctx.strict_io = true;
    std::uint8_t byte = 0;
    const ExitAction a = m.dispatch(io(false, 0x80, std::span(&byte, 1), 1));
    check_crash(m, a, "--strict-io");
    CHECK(contains(m.stop.state().message, "0x80"));
    CHECK(contains(m.stop.state().message, "read"));
}

TEST_CASE("dispatch_exit: --strict-io stops on an unclaimed port write") {
    Machine m;
    m.ctx.strict_io = true;
    std::uint8_t byte = 0;
    const ExitAction a = m.dispatch(io(true, 0x70, std::span(&byte, 1), 1));
    check_crash(m, a, "write");
    CHECK(contains(m.stop.state().message, "0x70"));
}

TEST_CASE("dispatch_exit: --strict-io does not affect claimed accesses") {
    Machine m;
    m.ctx.strict_io = true;
    std::uint8_t byte = 'x';
    const ExitAction a = m.dispatch(io(true, HV_SERIAL_PORT, std::span(&byte, 1), 1));
    CHECK(a.kind == ExitAction::Kind::Resume);
    CHECK_FALSE(m.stop.stopped());
}

TEST_CASE("dispatch_exit: MMIO reaches the MMIO bus, not the port bus") {
    Machine m;
    std::vector<std::uint8_t> data = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK(m.dispatch(mmio(true, kRecorderMmio + 0x40, data)).kind == ExitAction::Kind::Resume);
    REQUIRE(m.mmio_recorder.accesses.size() == 1);
    CHECK(m.mmio_recorder.accesses[0].offset == 0x40);
    CHECK(m.mmio_recorder.accesses[0].bytes == data);
    CHECK(m.port_recorder.accesses.empty());
}

TEST_CASE("dispatch_exit: unclaimed MMIO read returns all ones") {
    Machine m;
    std::vector<std::uint8_t> data(4, 0);
    const ExitAction a = m.dispatch(mmio(false, 0xfee00030, data)); // LAPIC version register: no irqchip
    CHECK(a.kind == ExitAction::Kind::Resume);
    CHECK(data == std::vector<std::uint8_t>(4, 0xff));
    REQUIRE(m.bus_log.size() == 1);
    CHECK(contains(m.bus_log[0], "mmio"));
    CHECK(contains(m.bus_log[0], "0xfee00030"));
}

TEST_CASE("dispatch_exit: --strict-io stops on unclaimed MMIO") {
    Machine m;
    m.ctx.strict_io = true;
    std::vector<std::uint8_t> data(4, 0);
    const ExitAction a = m.dispatch(mmio(true, 0xfee000b0, data));
    check_crash(m, a, "MMIO");
    CHECK(contains(m.stop.state().message, "0xfee000b0"));
}

// ---------------------------------------------------------------------------
// Malformed records must be refused without touching memory outside `data`
// (the ASan build proves "without touching": the buffers are exact-size heap
// allocations).

TEST_CASE("dispatch_exit: I/O record with data shorter than size*count is a crash") {
    Machine m;
    auto data = std::make_unique<std::uint8_t[]>(4);
    const ExitAction a = m.dispatch(io(true, kRecorderPort, std::span(data.get(), 4), 4, 2)); // needs 8
    check_crash(m, a, "malformed");
    CHECK(m.port_recorder.accesses.empty());
}

TEST_CASE("dispatch_exit: I/O record with size 0 is a crash") {
    Machine m;
    auto data = std::make_unique<std::uint8_t[]>(4);
    const ExitAction a = m.dispatch(io(false, kRecorderPort, std::span(data.get(), 4), 0, 1));
    check_crash(m, a, "malformed");
    CHECK(m.port_recorder.accesses.empty());
}

TEST_CASE("dispatch_exit: MMIO record with a short buffer is a crash") {
    Machine m;
    auto data = std::make_unique<std::uint8_t[]>(2);
    ExitRecord r = mmio(false, kRecorderMmio, std::span(data.get(), 2));
    r.size = 8;
    check_crash(m, m.dispatch(r), "malformed");
    CHECK(m.mmio_recorder.accesses.empty());
}

TEST_CASE("dispatch_exit: I/O record with a huge count is a crash") {
    Machine m;
    auto data = std::make_unique<std::uint8_t[]>(4);
    const ExitAction a = m.dispatch(io(true, HV_SERIAL_PORT, std::span(data.get(), 4), 4, 0xffffffffu));
    check_crash(m, a, "malformed");
}

// A 4-byte OUT to the hypercall port whose record carries fewer than 4
// bytes of data. The buffer is larger than the record's span so the
// mistake is visible in every build: bytes 2-3 of the buffer lie outside
// the record and hold the high half of a valid echo block's address.
TEST_CASE("dispatch_exit: malformed hypercall record (data shorter than 4 bytes) is a crash") {
    Machine m;
    hv_call_echo echo{};
    echo.hdr = {HV_CALL_ECHO, sizeof echo};
    echo.in = 1;
    REQUIRE(m.memory.write_obj(0x10000, echo));
    std::vector<std::uint8_t> buffer = {0x00, 0x00, 0x01, 0x00}; // LE 0x10000
    ExitRecord r = io(true, HV_HYPERCALL_PORT, std::span(buffer.data(), 2), 4);
    const ExitAction a = m.dispatch(r);
    check_crash(m, a, "malformed");
    CHECK(m.memory.read_obj<hv_call_echo>(0x10000)->out == 0); // no hypercall ran
}

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
// decode_exit over a kvm_run page filled by hand

TEST_CASE("decode_exit: port I/O points into the kvm_run page") {
    std::vector<std::uint8_t> page(4096, 0);
    auto& run = *reinterpret_cast<kvm_run*>(page.data());
    run.exit_reason = KVM_EXIT_IO;
    run.io.direction = KVM_EXIT_IO_OUT;
    run.io.size = 2;
    run.io.port = 0x3f8;
    run.io.count = 3;
    run.io.data_offset = 0x800;
    run.s.regs.regs.rip = 0x100010;
    run.s.regs.regs.rflags = 0x202;
    const ExitRecord r = hv::decode_exit(run, page.size(), 1);
    CHECK(r.kind == ExitKind::Io);
    CHECK(r.vcpu == 1);
    CHECK(r.is_write);
    CHECK(r.address == 0x3f8);
    CHECK(r.size == 2);
    CHECK(r.count == 3);
    CHECK(r.data.data() == page.data() + 0x800);
    CHECK(r.data.size() == 6);
    CHECK(r.rip == 0x100010);
    CHECK(r.rflags == 0x202);
}

TEST_CASE("decode_exit: port I/O data outside the kvm_run mapping decodes as Unknown") {
    std::vector<std::uint8_t> page(4096, 0);
    auto& run = *reinterpret_cast<kvm_run*>(page.data());
    run.exit_reason = KVM_EXIT_IO;
    run.io.size = 4;
    run.io.count = 2;
    run.io.data_offset = 4096 - 4; // 8 bytes needed, 4 available
    CHECK(hv::decode_exit(run, page.size(), 0).kind == ExitKind::Unknown);
    run.io.data_offset = 0xffffffffffff0000ull;
    CHECK(hv::decode_exit(run, page.size(), 0).kind == ExitKind::Unknown);
    run.io.data_offset = 4096 - 8; // exactly fits
    CHECK(hv::decode_exit(run, page.size(), 0).kind == ExitKind::Io);
}

TEST_CASE("decode_exit: MMIO length is clamped to the 8-byte data buffer") {
    std::vector<std::uint8_t> page(4096, 0);
    auto& run = *reinterpret_cast<kvm_run*>(page.data());
    run.exit_reason = KVM_EXIT_MMIO;
    run.mmio.phys_addr = 0xfee00000;
    run.mmio.len = 200;
    run.mmio.is_write = 1;
    const ExitRecord r = hv::decode_exit(run, page.size(), 0);
    CHECK(r.kind == ExitKind::Mmio);
    CHECK(r.address == 0xfee00000);
    CHECK(r.size == 8);
    CHECK(r.data.size() == 8);
    CHECK(r.data.data() == run.mmio.data);
}

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
