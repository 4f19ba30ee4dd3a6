#pragma once
// Where the VMM puts things in guest-physical memory. [0, HV_RESERVED_END)
// is the VMM's: the GDT, the identity page tables and the boot information
// live there; images load above it; per-vCPU stacks sit at the top of RAM.
#include <hv/abi.h>

#include <cstdint>

namespace hv::layout {

inline constexpr std::uint64_t kPageSize = 0x1000;
inline constexpr std::uint64_t kGdt = 0x1000;
inline constexpr std::uint64_t kPml4 = 0x2000;
inline constexpr std::uint64_t kPdpt = 0x3000;
inline constexpr std::uint64_t kPageDirs = 0x4000; // one 4 KiB directory per GiB mapped
inline constexpr std::uint64_t kMaxMappedGiB = 64;  // page directories end at 0x44000
inline constexpr std::uint64_t kMinIdentityGiB = 4; // MMIO below 4 GiB is always mapped
inline constexpr std::uint64_t kMultibootInfo = 0x50000;
inline constexpr std::uint64_t kMultibootMmap = 0x51000;
inline constexpr std::uint64_t kMultibootModules = 0x52000;
inline constexpr std::uint64_t kBootStrings = 0x53000; // module names, boot loader name
inline constexpr std::uint64_t kCmdline = 0x54000;
inline constexpr std::uint64_t kCmdlineMax = 0x1000; // including the NUL
inline constexpr std::uint64_t kLowMemoryEnd = 0x9fc00; // conventional memory reported to multiboot and Linux
// Linux (64-bit boot protocol): boot_params (the "zero page"), a stack for
// the first instructions (growing down into unused space), and the ACPI
// tables in the BIOS area where Linux also scans for the RSDP.
inline constexpr std::uint64_t kBootParams = 0x55000;
inline constexpr std::uint64_t kLinuxBootStack = 0x50000;
inline constexpr std::uint64_t kBiosAreaStart = 0xe0000;
inline constexpr std::uint64_t kAcpiTables = kBiosAreaStart;
// The PC's firmware data (pc_firmware.hpp), where guests look for it: the
// BIOS data area's EBDA segment and base-memory size, a 1 KiB extended BIOS
// data area at the end of conventional memory, and the MP floating pointer
// with its table in the BIOS ROM area (ACPI's RSDP opens kAcpiTables).
inline constexpr std::uint64_t kBdaEbdaSegment = 0x40e;   // 16-bit segment of the EBDA
inline constexpr std::uint64_t kBdaBaseMemoryKib = 0x413; // 16-bit conventional memory in KiB
inline constexpr std::uint64_t kEbda = kLowMemoryEnd;
inline constexpr std::uint64_t kEbdaSize = 0x400;
inline constexpr std::uint64_t kMpTable = 0xf0000;
// RAM is one block from 0, so with the PC platform it must end below the
// IOAPIC (0xfec00000) and the local APIC (0xfee00000), which it would hide.
inline constexpr std::uint64_t kMaxPcRam = 0xfec00000;
// A Linux kernel also wants room below 4 GiB for its 32-bit MMIO.
inline constexpr std::uint64_t kMaxLinuxRam = 3ull << 30;
// xAPIC IDs 0..254 (255 is the broadcast ID): see check_image_fits.
inline constexpr std::uint32_t kMaxLinuxCpus = 255;
inline constexpr std::uint64_t kImageStart = HV_RESERVED_END;

// The most vCPUs a VM has: what the ACPI and MP tables are built for
// (kAcpiMaxCpus) and what the ELF runtime supports (RT_MAX_CPUS).
inline constexpr std::uint32_t kMaxCpus = 1024;

inline constexpr std::uint64_t kMinRam = 4ull << 20;
inline constexpr std::uint64_t kMaxRam = kMaxMappedGiB << 30;

// Stacks hang down from the top of RAM below 4 GiB, so a 32-bit entry (and
// a 32-bit hypercall address of a stack variable) can reach them.
inline constexpr std::uint64_t stacks_top(std::uint64_t ram_size) {
    return ram_size < (4ull << 30) ? ram_size : (4ull << 30);
}
inline constexpr std::uint64_t stacks_base(std::uint64_t ram_size, std::uint32_t cpus) {
    return stacks_top(ram_size) - std::uint64_t{cpus} * HV_STACK_SIZE;
}
inline constexpr std::uint64_t stack_top(std::uint64_t ram_size, std::uint32_t vcpu) {
    return stacks_top(ram_size) - std::uint64_t{vcpu} * HV_STACK_SIZE;
}

} // namespace hv::layout
