#pragma once
// The ACPI tables a Linux guest needs on our KVM platform: the MADT so it
// finds every vCPU and the in-kernel IOAPIC, and a full (not hardware-
// reduced) FADT plus a DSDT naming \_S5 so `poweroff` reaches the PM1a
// control register (devices/acpi_pm.hpp), and the FADT names the PM timer
// (devices/acpi_pm_timer.hpp). Layouts follow ACPI 6.5.
#include <cstdint>
#include <vector>

namespace hv {

// What the tables describe. The defaults are the VMM's platform: KVM's
// in-kernel IOAPIC and local APICs at their architectural addresses, the
// PM1a registers at 0x600 (event block) and 0x604 (control block), the
// 24-bit PM timer right after them at 0x608, and the SCI on ISA IRQ 9.
struct AcpiPlatform {
    std::uint32_t cpus = 1; // APIC IDs 0..cpus-1, one per vCPU index
    std::uint16_t pm_base = 0x600;
    std::uint16_t pm_timer_port = 0x608; // PM_TMR_BLK, 4 bytes; pm_base + 8 by default
    std::uint8_t sci_irq = 9;
    std::uint32_t ioapic_address = 0xfec00000;
    std::uint8_t ioapic_id = 0;
    std::uint32_t lapic_address = 0xfee00000;
};

inline constexpr std::uint8_t kAcpiS5SleepType = 5; // the SLP_TYP value our \_S5 package names
inline constexpr std::uint32_t kAcpiMaxCpus = 1024;

// One blob to copy to guest-physical base_gpa. The RSDP (revision 2) opens
// it, so base_gpa is also the address for boot_params.acpi_rsdp_addr; the
// XSDT, RSDT, FADT, FACS, DSDT and MADT follow, aligned as ACPI requires,
// every pointer an absolute guest-physical address.
//
// Throws VmmError when base_gpa is not 16-byte aligned (the RSDP must be),
// when the blob would not end at or below 1 MiB (where the RSDT's 32-bit
// pointers and Linux's RSDP scan of the BIOS area expect it), when cpus is
// outside 1..kAcpiMaxCpus, when sci_irq is not an ISA IRQ from 1 to 15
// other than 2 (the MADT puts ISA IRQ 0, the PIT, on GSI 2), when
// the PM1 registers [pm_base, pm_base + 6) or the PM timer
// [pm_timer_port, pm_timer_port + 4) are not inside the port space above 0,
// or when the two overlap.
//
// The FADT describes the PM timer as PM_TMR_BLK with PM_TMR_LEN 4 and as
// X_PM_TMR_BLK (system I/O, 32 bits, dword access), with TMR_VAL_EXT clear:
// the counter is 24 bits wide.
std::vector<std::uint8_t> build_acpi_tables(const AcpiPlatform& platform, std::uint64_t base_gpa);

} // namespace hv
