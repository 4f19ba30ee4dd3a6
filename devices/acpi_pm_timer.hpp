#pragma once

#include <cstdint>
#include <functional>
#include <span>

#include "devices/io_device.hpp"

namespace hv {

// The ACPI power-management timer (ACPI 6.5, 4.8.3.3): a free-running
// up-counter at 3.579545 MHz that the FADT's PM_TMR_BLK points at
// (AcpiPlatform::pm_timer_port). Register it with `size` 4.
//
// The counter is 24 bits wide (the FADT's TMR_VAL_EXT is 0): it reads
//   floor(elapsed_ns * 3579545 / 10^9) mod 2^24
// where elapsed_ns is the injected clock's time since construction, exact
// for any uptime up to 2^64 ns (no intermediate overflow, no rounding from
// floating point). Bits 24-31 of the 32-bit register read 0. It is not
// stored, so it never drifts from the clock, and it counts from 0 at
// construction.
//
// An access of any width at offset 0-3 reads the corresponding bytes of the
// register, sampled once per access, so a 4-byte read is consistent; bytes
// past offset 3 read 0xff, as an open bus. Writes are ignored: the register
// is read-only and nothing here raises an interrupt (TMR_STS / TMR_EN in
// PM1 are not modelled).
//
// Threading: the device holds no mutable state and takes no lock; the clock
// is called concurrently from every vCPU thread that reads the timer, so it
// must be thread-safe. It must not go backwards; a time before
// construction counts as elapsed 0.
class AcpiPmTimer final : public IoDevice {
public:
    // Nanoseconds since an arbitrary fixed point.
    using Clock = std::function<uint64_t()>;

    static constexpr uint64_t size = 4;
    static constexpr uint64_t frequency_hz = 3579545;
    static constexpr uint32_t counter_mask = (1u << 24) - 1;

    // An empty clock means monotonic_ns.
    explicit AcpiPmTimer(Clock clock = monotonic_ns);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // The register's current value.
    uint32_t value() const;

    // The counter after elapsed_ns nanoseconds: floor(elapsed_ns *
    // frequency_hz / 10^9) mod 2^24.
    static uint32_t ticks_after(uint64_t elapsed_ns);

    // CLOCK_MONOTONIC in nanoseconds.
    static uint64_t monotonic_ns();

private:
    Clock clock_;
    uint64_t start_ns_;
};

}  // namespace hv
