// I/O exits: hv::dispatch_exit driven with synthetic port I/O and MMIO
// ExitRecords against real devices (Bus, Serial16550, DebugExit) wired as
// vm.cpp wires them (device accesses, string I/O, unclaimed accesses,
// --strict-io, malformed records), plus hv::decode_exit of I/O and MMIO
// exits over a hand-filled kvm_run.
#include <doctest/doctest.h>

#include <cstdint>
#include <linux/kvm.h>
#include <memory>
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
