#pragma once
// Puts a Linux bzImage into guest RAM for the 64-bit boot protocol: the
// protected-mode kernel at its load address, the initramfs near the top of
// RAM, the command line, boot_params (setup header, e820 map, initramfs and
// command-line pointers, RSDP address) and the ACPI tables that describe the
// CPUs, the IOAPIC and the power-off register to the kernel.
// No ioctls: unit tests check the memory it writes.
#include "vmm/boot/boot_setup.hpp"

#include <cstdint>
#include <vector>

namespace hv {

// What the kernel sees when the user gives no --cmdline: its console on the
// serial port, which is where `vmm run` shows guest output.
inline constexpr const char* kDefaultLinuxCmdline = "console=ttyS0";

// One e820 entry as boot_params carries it.
#pragma pack(push, 1)
struct E820Entry {
    std::uint64_t addr;
    std::uint64_t size;
    std::uint32_t type; // 1 RAM, 2 reserved
};
#pragma pack(pop)
static_assert(sizeof(E820Entry) == 20);
inline constexpr std::uint32_t kE820Ram = 1, kE820Reserved = 2;

// The map for `ram_size` bytes of RAM: conventional memory, the reserved
// EBDA/VGA/BIOS hole up to 1 MiB (the ACPI tables live there), RAM above.
std::vector<E820Entry> linux_e820_map(std::uint64_t ram_size);

// Offsets in struct boot_params (the "zero page") outside the setup header.
namespace boot_params {
inline constexpr std::size_t kSize = 4096;
inline constexpr std::size_t kAcpiRsdpAddr = 0x070;     // u64
inline constexpr std::size_t kExtRamdiskImage = 0x0c0;  // u32: high half of the initramfs address
inline constexpr std::size_t kExtRamdiskSize = 0x0c4;   // u32
inline constexpr std::size_t kExtCmdLinePtr = 0x0c8;    // u32
inline constexpr std::size_t kE820Entries = 0x1e8;      // u8
inline constexpr std::size_t kE820Table = 0x2d0;        // 128 x E820Entry
inline constexpr std::size_t kE820Max = 128;
} // namespace boot_params

// Called by load_guest for ImageKind::Linux. Throws VmmError for what does
// not fit (initramfs, command line longer than the kernel accepts, too many CPUs).
BootInfo load_linux(GuestMemory& mem, const BootImage& image, const BootConfig& config, const std::string& name);

} // namespace hv
