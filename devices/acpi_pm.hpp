#pragma once

#include <cstdint>
#include <functional>
#include <mutex>
#include <span>

#include "devices/io_device.hpp"

namespace hv {

// The ACPI PM1a fixed-hardware registers the FADT points at (vmm/platform/acpi_tables.hpp):
// the event block (PM1_STS, PM1_EN) and right after it the control block
// (PM1_CNT), 16 bits each. Register it at AcpiPlatform::pm_base with
// size 6:
//
//   offset 0-1  PM1_STS  write 1 to clear; WAK_STS (bit 15) is set when the
//                        guest enters a sleep state, so that a sleep the VMM
//                        does not act on ends at once instead of hanging
//                        the guest, which waits for WAK_STS.
//   offset 2-3  PM1_EN   read/write; nothing here raises an SCI.
//   offset 4-5  PM1_CNT  SCI_EN (bit 0) always reads 1: there is no legacy
//                        mode, the platform is in ACPI mode from reset;
//                        SLP_TYP (bits 10-12) read/write; SLP_EN (bit 13)
//                        is write-only and reads 0; other bits read 0.
//
// Writing SLP_EN calls on_sleep with the SLP_TYP written along with it
// (kAcpiS5SleepType for poweroff). Accesses of any width at any offset are
// combined byte by byte into the registers they cover, so Linux's 16-bit
// PM1_CNT write and a byte write of the upper half (offset 5) both count.
// Bytes past offset 5 read as 0xff and writes to them are ignored.
//
// Threading: every entry point takes the device's mutex, and on_sleep is
// called with it held, so sleeps are reported one at a time in order; it
// must not call back into this device.
class AcpiPmRegisters final : public IoDevice {
public:
    using OnSleep = std::function<void(std::uint8_t slp_typ)>;

    static constexpr uint64_t size = 6;

    explicit AcpiPmRegisters(OnSleep on_sleep);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    uint16_t read_register(uint64_t index) const;
    // Writes the bytes of value selected by byte_mask (0x00ff, 0xff00 or 0xffff).
    void write_register(uint64_t index, uint16_t value, uint16_t byte_mask);

    std::mutex mutex_;
    OnSleep on_sleep_;
    uint16_t status_ = 0;
    uint16_t enable_ = 0;
    uint8_t sleep_type_ = 0;  // PM1_CNT.SLP_TYP
};

}  // namespace hv
