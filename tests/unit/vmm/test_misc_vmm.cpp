// The VMM's small pieces that need no KVM: per-vCPU CPUID, the TDP
// (EPT/NPT) probe over a fake sysfs tree, the stop latch, the debug-exit
// status mapping and the `vmm run` option checks.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/fake_sysfs.hpp"
#include "tests/support/text_match.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/kvm/stop_latch.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/run/vm.hpp"

using namespace std::chrono_literals;
using hv::StopLatch;
using hv::StopReason;
using hv::test::contains;
using hv::test::message_of;

namespace {

kvm_cpuid_entry2 leaf(std::uint32_t function, std::uint32_t index, std::uint32_t ebx, std::uint32_t edx) {
    kvm_cpuid_entry2 e{};
    e.function = function;
    e.index = index;
    e.eax = 0x11111111;
    e.ebx = ebx;
    e.ecx = 0x33333333;
    e.edx = edx;
    return e;
}

const kvm_cpuid_entry2* find(const std::vector<kvm_cpuid_entry2>& v, std::uint32_t function, std::uint32_t index) {
    for (const auto& e : v)
        if (e.function == function && e.index == index) return &e;
    return nullptr;
}

std::string validate_error(const hv::RunOptions& o) {
    return message_of<hv::VmmError>([&] { hv::validate_run_options(o); });
}

constexpr std::uint64_t MiB = 1ull << 20, GiB = 1ull << 30;

} // namespace

// ---------------------------------------------------------------------------
// CpuidTable::for_vcpu. SDM Vol. 2A, CPUID: leaf 1 EBX[31:24] is the initial
// APIC ID; leaves 0xB and 0x1F return the x2APIC ID in EDX for every subleaf.

TEST_CASE("CpuidTable::for_vcpu: APIC ID in leaf 1 EBX bits 31:24, other EBX bits kept") {
    const hv::CpuidTable table({leaf(0, 0, 0x756e6547, 0x49656e69), leaf(1, 0, 0xAABBCCDD, 0x178bfbff)});
    const auto v = table.for_vcpu(5);
    const auto* l1 = find(v, 1, 0);
    REQUIRE(l1);
    CHECK(l1->ebx == 0x05BBCCDD);
    CHECK(l1->eax == 0x11111111);
    CHECK(l1->ecx == 0x33333333);
    CHECK(l1->edx == 0x178bfbff);
    const auto* l0 = find(v, 0, 0);
    REQUIRE(l0);
    CHECK(l0->ebx == 0x756e6547); // untouched
    CHECK(l0->edx == 0x49656e69);
}

TEST_CASE("CpuidTable::for_vcpu: x2APIC ID in leaves 0xB and 0x1F EDX, every subleaf") {
    const hv::CpuidTable table({leaf(0xb, 0, 0x1, 0x55), leaf(0xb, 1, 0x2, 0x55), leaf(0x1f, 0, 0x1, 0x55),
                                leaf(0x1f, 2, 0x3, 0x55), leaf(4, 0, 0x01c0003f, 0x55)});
    const auto v = table.for_vcpu(7);
    CHECK(find(v, 0xb, 0)->edx == 7);
    CHECK(find(v, 0xb, 1)->edx == 7);
    CHECK(find(v, 0x1f, 0)->edx == 7);
    CHECK(find(v, 0x1f, 2)->edx == 7);
    CHECK(find(v, 0xb, 1)->ebx == 0x2); // only EDX changes
    CHECK(find(v, 4, 0)->edx == 0x55);  // other leaves untouched
    CHECK(v.size() == 5);
}

TEST_CASE("CpuidTable::for_vcpu: returns a copy and leaves the table unchanged") {
    const hv::CpuidTable table({leaf(1, 0, 0x00BBCCDD, 0), leaf(0xb, 0, 0, 0)});
    const auto v0 = table.for_vcpu(0);
    const auto v3 = table.for_vcpu(3);
    CHECK(find(v0, 1, 0)->ebx == 0x00BBCCDD);
    CHECK(find(v3, 1, 0)->ebx == 0x03BBCCDD);
    CHECK(find(table.entries(), 1, 0)->ebx == 0x00BBCCDD);
    CHECK(find(table.entries(), 0xb, 0)->edx == 0);
}

TEST_CASE("CpuidTable::for_vcpu: the 8-bit legacy APIC ID truncates, the x2APIC ID does not") {
    const hv::CpuidTable table({leaf(1, 0, 0x12345678, 0), leaf(0xb, 0, 0, 0)});
    const auto v = table.for_vcpu(0x1ff);
    CHECK(find(v, 1, 0)->ebx == 0xff345678);
    CHECK(find(v, 0xb, 0)->edx == 0x1ff);
}

// ---------------------------------------------------------------------------
// tdp_status over a fake /sys/module

TEST_CASE("tdp_status: kvm_amd npt = Y / N") {
    FakeSysfs sys;
    sys.param("kvm_amd", "npt", "Y\n");
    hv::TdpStatus s = sys.status();
    CHECK(s.module == "kvm_amd");
    CHECK(s.parameter == "npt");
    CHECK(s.enabled);

    sys.param("kvm_amd", "npt", "N\n");
    s = sys.status();
    CHECK(s.module == "kvm_amd");
    CHECK_FALSE(s.enabled);
}

TEST_CASE("tdp_status: kvm_intel ept = 1 / 0 / Y / N") {
    FakeSysfs sys;
    sys.param("kvm_intel", "ept", "1\n");
    hv::TdpStatus s = sys.status();
    CHECK(s.module == "kvm_intel");
    CHECK(s.parameter == "ept");
    CHECK(s.enabled);

    sys.param("kvm_intel", "ept", "0\n");
    CHECK_FALSE(sys.status().enabled);
    sys.param("kvm_intel", "ept", "Y\n"); // newer kernels print bools as Y/N
    CHECK(sys.status().enabled);
    sys.param("kvm_intel", "ept", "N\n");
    CHECK_FALSE(sys.status().enabled);
}

TEST_CASE("tdp_status: kvm_pvm has no TDP, and a vendor module wins over it") {
    FakeSysfs sys;
    sys.param("kvm_pvm", "pvm_native", "N");
    hv::TdpStatus s = sys.status();
    CHECK(s.module == "kvm_pvm");
    CHECK(s.parameter.empty());
    CHECK_FALSE(s.enabled);
    sys.param("kvm_amd", "npt", "Y");
    CHECK(sys.status().module == "kvm_amd");
    CHECK(sys.status().enabled);
}

TEST_CASE("tdp_status: neither module loaded") {
    FakeSysfs sys;
    hv::TdpStatus s = sys.status();
    CHECK(s.module.empty());
    CHECK(s.parameter.empty());
    CHECK_FALSE(s.enabled);

    // A module directory without the parameter (kvm loaded, vendor module not).
    std::filesystem::create_directories(sys.root / "kvm" / "parameters");
    std::filesystem::create_directories(sys.root / "kvm_intel" / "parameters");
    CHECK(sys.status().module.empty());
}

TEST_CASE("tdp_status: a nonexistent sysfs root") {
    const hv::TdpStatus s = hv::tdp_status("/nonexistent/hv-test/sys/module");
    CHECK(s.module.empty());
    CHECK_FALSE(s.enabled);
}

// ---------------------------------------------------------------------------
// StopLatch

TEST_CASE("StopLatch: the first request wins") {
    StopLatch latch;
    CHECK_FALSE(latch.stopped());
    CHECK(latch.state().reason == StopReason::None);
    CHECK(latch.request(StopReason::DebugExit, 3, "first"));
    CHECK(latch.stopped());
    CHECK_FALSE(latch.request(StopReason::GuestCrash, 126, "second"));
    CHECK_FALSE(latch.request(StopReason::Timeout, 124));
    const hv::StopState st = latch.state();
    CHECK(st.reason == StopReason::DebugExit);
    CHECK(st.status == 3);
    CHECK(st.message == "first");
}

TEST_CASE("StopLatch: concurrent requests have exactly one winner") {
    StopLatch latch;
    std::atomic<int> winners{0};
    std::atomic<bool> go{false};
    std::vector<std::thread> threads;
    for (int i = 0; i < 8; ++i) {
        threads.emplace_back([&, i] {
            while (!go.load()) std::this_thread::yield();
            if (latch.request(StopReason::GuestCrash, i, "thread " + std::to_string(i))) ++winners;
        });
    }
    go = true;
    for (auto& t : threads) t.join();
    CHECK(winners == 1);
    const hv::StopState st = latch.state();
    CHECK(st.message == "thread " + std::to_string(st.status)); // one request's fields, not a mix
}

TEST_CASE("StopLatch: wait_until times out when nobody stops") {
    StopLatch latch;
    const auto start = std::chrono::steady_clock::now();
    const auto deadline = start + 50ms;
    CHECK_FALSE(latch.wait_until(deadline));
    CHECK(std::chrono::steady_clock::now() >= deadline);
    CHECK_FALSE(latch.stopped());
    // A deadline in the past returns at once.
    CHECK_FALSE(latch.wait_until(start - 1s));
}

TEST_CASE("StopLatch: wait_until and wait wake up when another thread stops") {
    StopLatch latch;
    std::thread stopper([&] {
        std::this_thread::sleep_for(20ms);
        latch.request(StopReason::AllHalted, 0, "done");
    });
    const auto start = std::chrono::steady_clock::now();
    CHECK(latch.wait_until(start + 30s));
    CHECK(std::chrono::steady_clock::now() - start < 10s);
    stopper.join();
    latch.wait(); // already stopped: returns immediately
    CHECK(latch.state().reason == StopReason::AllHalted);
    // Already stopped: wait_until returns true even with a past deadline.
    CHECK(latch.wait_until(start - 1s));
}

TEST_CASE("StopLatch: wait blocks until the stop") {
    StopLatch latch;
    std::atomic<bool> returned{false};
    std::thread waiter([&] {
        latch.wait();
        returned = true;
    });
    std::this_thread::sleep_for(30ms);
    CHECK_FALSE(returned.load());
    latch.request(StopReason::Timeout, 124);
    waiter.join();
    CHECK(returned.load());
}

TEST_CASE("to_string(StopReason): every reason has a distinct name") {
    const StopReason all[] = {StopReason::None,       StopReason::DebugExit,  StopReason::AllHalted,
                              StopReason::GuestCrash, StopReason::Timeout,    StopReason::VmmFailure,
                              StopReason::GuestShutdown};
    std::vector<std::string> names;
    for (StopReason r : all) {
        const std::string n = hv::to_string(r);
        CHECK_FALSE(n.empty());
        CHECK(n != "?");
        for (const auto& other : names) CHECK(n != other);
        names.push_back(n);
    }
}

// ---------------------------------------------------------------------------
// debug_exit_status: values 0..123 are the guest's; larger ones clamp to 123
// (124-126 are the VMM's own statuses, see vmm_error.hpp).

TEST_CASE("debug_exit_status: identity up to 123, clamped above") {
    CHECK(hv::debug_exit_status(0) == 0);
    CHECK(hv::debug_exit_status(1) == 1);
    CHECK(hv::debug_exit_status(122) == 122);
    CHECK(hv::debug_exit_status(123) == 123);
    CHECK(hv::debug_exit_status(124) == 123); // must not look like --timeout
    CHECK(hv::debug_exit_status(125) == 123);
    CHECK(hv::debug_exit_status(126) == 123);
    CHECK(hv::debug_exit_status(200) == 123);
    CHECK(hv::debug_exit_status(255) == 123);
    CHECK(hv::debug_exit_status(256) == 123); // not 256 & 0xff = 0
    CHECK(hv::debug_exit_status(0x80000000u) == 123); // not negative
    CHECK(hv::debug_exit_status(UINT32_MAX) == 123);
}

// ---------------------------------------------------------------------------
// validate_run_options

TEST_CASE("validate_run_options: defaults and boundary values are accepted") {
    hv::RunOptions o;
    o.image = "guest.elf";
    CHECK(validate_error(o) == "");
    o.mem = 4 * MiB; // the minimum
    CHECK(validate_error(o) == "");
    o.mem = 0xfec00000; // the PC platform's maximum: RAM ends below the IOAPIC
    CHECK(validate_error(o) == "");
    o.mem = 4 * MiB + 4096;
    CHECK(validate_error(o) == "");
    o.platform = hv::Platform::Bare;
    o.mem = 64 * GiB; // the bare platform's maximum: what the identity map covers
    CHECK(validate_error(o) == "");
}

TEST_CASE("validate_run_options: on the PC platform RAM may not cover the IOAPIC and local APIC") {
    hv::RunOptions o;
    o.mem = 0xfec00000 + 4096;
    const std::string msg = validate_error(o);
    CHECK(contains(msg, "would cover the IOAPIC and local APIC at 0xfec00000"));
    CHECK(contains(msg, "--platform bare"));
    o.platform = hv::Platform::Bare;
    CHECK(validate_error(o) == "");
}

TEST_CASE("validate_run_options: zero vCPUs") {
    hv::RunOptions o;
    o.cpus = 0;
    CHECK(contains(validate_error(o), "--cpus"));
}

TEST_CASE("validate_run_options: too little memory") {
    hv::RunOptions o;
    o.mem = 4 * MiB - 4096;
    std::string msg = validate_error(o);
    CHECK(contains(msg, "--mem"));
    CHECK(contains(msg, "too small"));
    CHECK(contains(msg, "4 MiB")); // names the minimum
    o.mem = 0;
    CHECK(contains(validate_error(o), "too small"));
}

TEST_CASE("validate_run_options: too much memory") {
    hv::RunOptions o;
    o.mem = 64 * GiB + 4096;
    std::string msg = validate_error(o);
    CHECK(contains(msg, "--mem"));
    CHECK(contains(msg, "64 GiB"));
    o.mem = UINT64_MAX;
    CHECK(contains(validate_error(o), "--mem"));
}

TEST_CASE("validate_run_options: memory not a multiple of 4 KiB") {
    hv::RunOptions o;
    o.mem = 128 * MiB + 1;
    std::string msg = validate_error(o);
    CHECK(contains(msg, "4 KiB"));
    CHECK(contains(msg, std::to_string(128 * MiB + 1)));
    o.mem = 128 * MiB + 2048;
    CHECK(contains(validate_error(o), "4 KiB"));
}

TEST_CASE("validate_run_options: more vCPU stacks than RAM above 1 MiB") {
    hv::RunOptions o;
    o.mem = 4 * MiB;
    // (4 MiB - 1 MiB) / 16 KiB = 192 stacks fit exactly.
    o.cpus = 192;
    CHECK(validate_error(o) == "");
    o.cpus = 193;
    std::string msg = validate_error(o);
    CHECK(contains(msg, "193"));
    CHECK(contains(msg, "stacks"));
    CHECK(contains(msg, "--mem"));
    o.cpus = UINT32_MAX; // refused as too many vCPUs before the stacks are counted
    CHECK(contains(validate_error(o), "--cpus 4294967295 exceeds the VMM's maximum of 1024 vCPUs"));
    o.cpus = 1024;
    CHECK(contains(validate_error(o), "stacks"));
}

TEST_CASE("validate_run_options: negative timeout") {
    hv::RunOptions o;
    o.timeout_seconds = -1;
    CHECK(contains(validate_error(o), "--timeout"));
    o.timeout_seconds = 0;
    CHECK(validate_error(o) == "");
    o.timeout_seconds = 0.5;
    CHECK(validate_error(o) == "");
}

TEST_CASE("platform_named: the inverse of to_string(Platform), nothing else") {
    CHECK(hv::platform_named("pc") == hv::Platform::Pc);
    CHECK(hv::platform_named("bare") == hv::Platform::Bare);
    CHECK(hv::platform_named(hv::to_string(hv::Platform::Bare)) == hv::Platform::Bare);
    CHECK(hv::platform_named("PC") == std::nullopt);
    CHECK(hv::platform_named("") == std::nullopt);
    CHECK(hv::platform_named("isa") == std::nullopt);
}
