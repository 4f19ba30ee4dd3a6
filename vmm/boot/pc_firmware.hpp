#pragma once
// The data a PC's firmware leaves in low memory, written for every image
// kind on the PC platform, where a guest written for real hardware or QEMU
// looks for it:
//   0x40e   BIOS data area: segment of the extended BIOS data area (EBDA)
//   0x413   BIOS data area: conventional memory in KiB (639)
//   0x9fc00 the EBDA, 1 KiB (its first byte: its size in KiB); reserved in
//           the multiboot and e820 memory maps
//   0xe0000 ACPI tables, the RSDP first (acpi_tables.hpp): found by
//           scanning the BIOS area, and named in Linux's boot_params
//   0xf0000 MP floating pointer and configuration table (mp_table.hpp)
// No ioctls: unit tests read the memory back.
#include "vmm/kvm/guest_memory.hpp"

#include <cstdint>

namespace hv {

// `cpus`: the vCPUs the tables list (APIC IDs 0 .. cpus-1). Throws VmmError
// when cpus is outside what the tables can list (1 .. kAcpiMaxCpus).
void write_pc_firmware(GuestMemory& mem, std::uint32_t cpus);

} // namespace hv
