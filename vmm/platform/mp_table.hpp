#pragma once
// The Intel MultiProcessor Specification 1.4 tables, for guests that find
// their CPUs and interrupt routing without ACPI (Linux with acpi=off, older
// or smaller kernels, test kernels). They describe the same platform as the
// ACPI MADT (acpi_tables.hpp) and must agree with it: both are built from
// one AcpiPlatform (its CPUs, IOAPIC, local APIC address and SCI; the PM
// ports have no place in an MP table).
#include "vmm/platform/acpi_tables.hpp"

#include <cstdint>
#include <vector>

namespace hv {

inline constexpr std::uint32_t kMpMaxCpus = 1024;
// The processor entries hold an 8-bit APIC ID, and 0xff is the xAPIC
// broadcast ID, so an MP table can list APIC IDs 0..254 only: CPUs from 255
// up are left out (an OS finds them through the MADT's x2APIC entries).
inline constexpr std::uint32_t kMpMaxListedCpus = 255;

// One blob to copy to guest-physical base_gpa: the 16-byte floating pointer
// structure ("_MP_", spec revision 1.4, feature byte 1 = 0: a configuration
// table follows; feature byte 2 bit 7 (IMCRP) = 0: virtual-wire mode, no
// IMCR) and right after it the configuration table ("PCMP", no OEM table,
// no extended table), its entries in the order the spec requires:
//
//  * one processor entry per listed CPU, by APIC ID (= vCPU index): local
//    APIC version 0x14 (KVM's xAPIC; at 0x14 and above Linux treats the
//    APIC as an xAPIC and does not insist on unique IOAPIC IDs), enabled,
//    the BSP flag on CPU 0 only; CPU signature 0x600 (family 6, model 0,
//    stepping 0) and feature flags FPU and APIC (CPUID.1:EDX bits 0 and 9),
//    placeholders: the OS takes the real values from CPUID;
//  * one bus entry: bus 0, "ISA   ";
//  * one I/O APIC entry: ioapic_id, version 0x11 (what KVM's in-kernel
//    IOAPIC reports in its version register), enabled, ioapic_address;
//  * I/O interrupt entries (INT) for ISA IRQs 0-15 but 2 (the cascade),
//    IRQ n on IOAPIC pin n except IRQ 0, the PIT, on pin 2, as the MADT's
//    override says and KvmVm::create_pc_irqchip routes it (as on a PC and
//    QEMU). All are "conforms to the bus" (ISA: edge, active high) except
//    the SCI, which like the MADT's override is level-triggered and active
//    high. There is no ExtINT entry: KVM's IOAPIC does not deliver ExtINT,
//    the 8259 output reaches the CPUs through LINT0 only;
//  * local interrupt entries for all local APICs (destination 0xff):
//    ExtINT -> LINT0 and NMI -> LINT1, both conforming.
//
// Guests look for the floating pointer in the first KiB of the EBDA, the
// last KiB of base memory and the BIOS area 0xF0000-0xFFFFF; placing the
// blob there is the caller's part.
//
// Throws VmmError when base_gpa is not 16-byte aligned, when the blob would
// not end at or below 1 MiB, when cpus is outside 1..kMpMaxCpus, or when
// sci_irq is not an ISA IRQ other than 0 (the PIT) and 2 (the cascade).
std::vector<std::uint8_t> build_mp_table(const AcpiPlatform& platform, std::uint64_t base_gpa);

} // namespace hv
