// hv::AcpiPmTimer: the 24-bit ACPI PM timer at 3.579545 MHz (ACPI 6.5,
// 4.8.3.3), driven by an injected clock. Expected values are computed here
// with 128-bit arithmetic, independently of the device's split arithmetic.
#include <doctest/doctest.h>

#include <array>
#include <chrono>
#include <cstdint>
#include <span>
#include <thread>

#include "devices/acpi_pm_timer.hpp"
#include "devices/bus.hpp"

namespace {

constexpr std::uint64_t kHz = 3579545;
constexpr std::uint64_t kStart = 1'000'000'000'000; // the clock's reading at construction

__extension__ typedef unsigned __int128 U128;

std::uint32_t expected_ticks(std::uint64_t elapsed_ns) {
    return static_cast<std::uint32_t>((U128{elapsed_ns} * kHz / 1'000'000'000u) % (1u << 24));
}

// A timer whose clock the test sets, in nanoseconds since construction.
struct Timer {
    std::uint64_t now = kStart;
    hv::AcpiPmTimer dev{[this] { return now; }};

    void at(std::uint64_t elapsed_ns) { now = kStart + elapsed_ns; }
    std::uint32_t read32(std::uint64_t offset = 0) {
        std::array<std::uint8_t, 4> data{0xaa, 0xaa, 0xaa, 0xaa};
        dev.read(offset, data);
        return static_cast<std::uint32_t>(data[0] | data[1] << 8 | data[2] << 16 | data[3] << 24);
    }
};

} // namespace

TEST_CASE("acpi_pm_timer: exact values at chosen times") {
    Timer t;
    const std::uint64_t second = 1'000'000'000;
    const struct {
        std::uint64_t ns;
        std::uint32_t ticks;
    } cases[] = {
        {0, 0},
        {279, 0},          // one tick is 279.365 ns
        {280, 1},
        {1'000'000, 3579}, // 1 ms
        {second, 3579545},
        {2 * second, 7159090},
        {4 * second, 14318180},
        {5 * second, 17897725 - (1u << 24)},
    };
    for (const auto& c : cases) {
        CAPTURE(c.ns);
        t.at(c.ns);
        CHECK(t.read32() == c.ticks);
        CHECK(t.dev.value() == c.ticks);
        CHECK(hv::AcpiPmTimer::ticks_after(c.ns) == c.ticks);
    }
}

TEST_CASE("acpi_pm_timer: no overflow for any uptime") {
    for (std::uint64_t ns : {std::uint64_t{1} << 40, std::uint64_t{1} << 63, ~std::uint64_t{0},
                             ~std::uint64_t{0} - 999'999'999, std::uint64_t{5'153'960'755'000'000'000u},
                             std::uint64_t{0x1234'5678'9abc'def0}}) {
        CAPTURE(ns);
        CHECK(hv::AcpiPmTimer::ticks_after(ns) == expected_ticks(ns));
    }
    // Through the device too: the clock may start anywhere.
    std::uint64_t now = 123;
    hv::AcpiPmTimer dev{[&now] { return now; }};
    now = ~std::uint64_t{0};
    CHECK(dev.value() == expected_ticks(~std::uint64_t{0} - 123));
}

TEST_CASE("acpi_pm_timer: wraps at 2^24 and is monotonic between wraps") {
    Timer t;
    // The first time the counter reaches 2^24: ceil(2^24 * 10^9 / f) ns.
    const std::uint64_t wrap_ns = ((std::uint64_t{1} << 24) * 1'000'000'000 + kHz - 1) / kHz;
    t.at(wrap_ns - 1);
    CHECK(t.read32() == (1u << 24) - 1);
    t.at(wrap_ns);
    CHECK(t.read32() == 0);

    // Step through three wrap periods in uneven steps: the counter never
    // decreases except at a wrap, and wraps exactly once per period.
    std::uint32_t previous = 0;
    int wraps = 0;
    for (std::uint64_t ns = 0; ns < 3 * wrap_ns + 10'000'000; ns += 9'999'991) {
        t.at(ns);
        const std::uint32_t value = t.read32();
        CHECK(value <= hv::AcpiPmTimer::counter_mask);
        if (value < previous) ++wraps;
        previous = value;
    }
    CHECK(wraps == 3);
}

TEST_CASE("acpi_pm_timer: counts 3579545 ticks per second from any point") {
    Timer t;
    for (std::uint64_t from : {std::uint64_t{0}, std::uint64_t{123'456'789}, std::uint64_t{86'400} * 1'000'000'000}) {
        CAPTURE(from);
        t.at(from);
        const std::uint32_t a = t.read32();
        t.at(from + 1'000'000'000);
        const std::uint32_t b = t.read32();
        const std::uint32_t delta = (b - a) & hv::AcpiPmTimer::counter_mask;
        CHECK(delta >= kHz); // floor may gain the one tick the start lost
        CHECK(delta <= kHz + 1);
    }
}

TEST_CASE("acpi_pm_timer: byte, word and dword reads at every offset") {
    Timer t;
    t.at(4'000'000'000); // 14318180 = 0x00da7a64
    REQUIRE(t.dev.value() == 0x00da7a64);
    for (std::uint64_t offset = 0; offset < 4; ++offset) {
        CAPTURE(offset);
        std::array<std::uint8_t, 1> b{};
        t.dev.read(offset, b);
        CHECK(b[0] == static_cast<std::uint8_t>(0x00da7a64u >> (8 * offset)));
    }
    std::array<std::uint8_t, 2> w{};
    t.dev.read(0, w);
    CHECK(w == std::array<std::uint8_t, 2>{0x64, 0x7a});
    t.dev.read(2, w);
    CHECK(w == std::array<std::uint8_t, 2>{0xda, 0x00}); // bits 24-31 read 0
    t.dev.read(3, w);
    CHECK(w == std::array<std::uint8_t, 2>{0x00, 0xff}); // past the register: open bus
    CHECK(t.read32(0) == 0x00da7a64);
    CHECK(t.read32(1) == 0xff00da7a);
    std::array<std::uint8_t, 8> q{};
    t.dev.read(0, q);
    CHECK(q == std::array<std::uint8_t, 8>{0x64, 0x7a, 0xda, 0x00, 0xff, 0xff, 0xff, 0xff});
}

TEST_CASE("acpi_pm_timer: writes are ignored") {
    Timer t;
    t.at(1'000'000'000);
    const std::array<std::uint8_t, 4> zeros{};
    t.dev.write(0, zeros);
    t.dev.write(2, std::span<const std::uint8_t>(zeros).first(1));
    CHECK(t.read32() == 3579545);
}

TEST_CASE("acpi_pm_timer: a clock before construction reads 0") {
    Timer t;
    t.now = kStart - 1000;
    CHECK(t.read32() == 0);
}

TEST_CASE("acpi_pm_timer: the default clock runs at about 3.58 MHz") {
    hv::AcpiPmTimer timer;
    const auto start = std::chrono::steady_clock::now();
    const std::uint32_t a = timer.value();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    const std::uint32_t b = timer.value();
    const auto elapsed = std::chrono::steady_clock::now() - start;
    const std::uint32_t delta = (b - a) & hv::AcpiPmTimer::counter_mask;
    const auto elapsed_ns = static_cast<std::uint64_t>(std::chrono::nanoseconds(elapsed).count());
    CHECK(delta >= 20 * kHz / 1000 - 1);                       // at least the 20 ms slept
    CHECK(delta <= expected_ticks(elapsed_ns) + 1);            // at most the time that passed
}

TEST_CASE("acpi_pm_timer behind the port bus at 0x608") {
    Timer t;
    hv::Bus bus("port");
    bus.add(0x608, hv::AcpiPmTimer::size, t.dev, "pm-timer");
    t.at(1'000'000'000);
    std::array<std::uint8_t, 4> data{};
    CHECK(bus.read(0x608, data) == hv::BusResult::Handled);
    CHECK(data == std::array<std::uint8_t, 4>{0x99, 0x9e, 0x36, 0x00}); // 3579545 = 0x369e99
    CHECK(bus.device_at(0x60b).has_value());
    CHECK_FALSE(bus.device_at(0x60c).has_value());
}
