#pragma once
// Shared by the exit tests (test_exit_dispatch_*.cpp): a Machine holding
// the devices of a VM (Bus, Serial16550, DebugExit and two recorders) wired
// as vm.cpp wires them, a builder of port I/O ExitRecords, and the check
// that an action stopped the VM as a guest crash.
#include <doctest/doctest.h>

#include <cstdint>
#include <linux/kvm.h>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "devices/bus.hpp"
#include "devices/debug_exit.hpp"
#include "devices/serial16550.hpp"
#include "hv/abi.h"
#include "tests/support/text_match.hpp"
#include "vmm/kvm/exit_record.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/kvm/stop_latch.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/run/exit_dispatch.hpp"

namespace hv::test::exit_dispatch {

using hv::test::contains;

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

inline constexpr std::uint64_t kRam = 2 << 20;
inline constexpr std::uint64_t kRecorderPort = 0x600;
inline constexpr std::uint64_t kRecorderMmio = 0xd0000000;

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

inline ExitRecord io(bool is_write, std::uint16_t port, std::span<std::uint8_t> data, std::uint32_t size,
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

inline void check_crash(const Machine& m, const ExitAction& a, const std::string& message_part) {
    CHECK(a.kind == ExitAction::Kind::Stop);
    CHECK(a.crash_report);
    const hv::StopState st = m.stop.state();
    CHECK(st.reason == StopReason::GuestCrash);
    CHECK(st.status == hv::exit_status::kGuestCrash);
    CAPTURE(st.message);
    CHECK(contains(st.message, message_part));
}

} // namespace hv::test::exit_dispatch
