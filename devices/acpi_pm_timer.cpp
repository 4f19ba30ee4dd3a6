#include "devices/acpi_pm_timer.hpp"

#include <ctime>
#include <utility>

namespace hv {
namespace {

constexpr uint64_t kNsPerSecond = 1'000'000'000;

}  // namespace

AcpiPmTimer::AcpiPmTimer(Clock clock) : clock_(std::move(clock)) {
    if (!clock_) {
        clock_ = monotonic_ns;
    }
    start_ns_ = clock_();
}

uint64_t AcpiPmTimer::monotonic_ns() {
    timespec now{};
    clock_gettime(CLOCK_MONOTONIC, &now);
    return static_cast<uint64_t>(now.tv_sec) * kNsPerSecond + static_cast<uint64_t>(now.tv_nsec);
}

uint32_t AcpiPmTimer::ticks_after(uint64_t elapsed_ns) {
    // elapsed = s * 10^9 + r, so elapsed * f / 10^9 = s * f + r * f / 10^9,
    // where only the last term has a fraction. s < 1.9e10 and f < 3.6e6
    // keep s * f below 6.7e16, and r * f below 3.6e15: no overflow, and the
    // floor is exact.
    const uint64_t seconds = elapsed_ns / kNsPerSecond;
    const uint64_t rest = elapsed_ns % kNsPerSecond;
    const uint64_t ticks = seconds * frequency_hz + rest * frequency_hz / kNsPerSecond;
    return static_cast<uint32_t>(ticks & counter_mask);
}

uint32_t AcpiPmTimer::value() const {
    const uint64_t now = clock_();
    return ticks_after(now > start_ns_ ? now - start_ns_ : 0);
}

void AcpiPmTimer::read(uint64_t offset, std::span<uint8_t> data) {
    const uint32_t value_now = value();
    for (std::size_t i = 0; i < data.size(); ++i) {
        const uint64_t byte = offset + i;
        data[i] = byte < size ? static_cast<uint8_t>(value_now >> (8 * byte)) : 0xff;
    }
}

void AcpiPmTimer::write(uint64_t, std::span<const uint8_t>) {}

}  // namespace hv
