#pragma once
// Puts a parsed image into guest RAM and computes the architectural state
// each vCPU starts in: GDT, identity page tables, boot information (command
// line, multiboot info, modules), segment/control registers and GPRs.
// Pure functions over GuestMemory and KVM's register structs: no ioctls, so
// unit tests drive them directly.
#include "vmm/boot/boot_image.hpp"
#include "vmm/kvm/guest_memory.hpp"

#include <cstdint>
#include <linux/kvm.h>
#include <string>
#include <vector>

namespace hv {

struct BootModule {
    std::string name;                 // becomes the module's string (multiboot)
    std::vector<std::uint8_t> bytes;
};

struct BootConfig {
    std::uint64_t ram_size = 0;
    std::uint32_t cpus = 1;
    std::string cmdline;
    std::vector<BootModule> modules; // --initrd: a multiboot module, or a Linux initramfs
    bool pc_firmware = true;         // the PC platform's tables in low memory (pc_firmware.hpp)
};

struct BootInfo {
    ImageKind kind = ImageKind::Elf64;
    std::uint64_t entry = 0;
    std::uint64_t cmdline_gpa = 0;   // 0: no command line
    std::string cmdline;             // the command line the guest got (a Linux kernel's default without --cmdline)
    std::uint64_t multiboot_info = 0;
    std::uint64_t boot_params = 0;   // Linux: the zero page, passed in RSI
};

// Validates the config against the image (throws VmmError), then writes the
// segments, GDT, page tables, boot information and, with pc_firmware, the
// PC's firmware tables into `mem`.
BootInfo load_guest(GuestMemory& mem, const BootImage& image, const BootConfig& config, const std::string& name);

// Identity page tables covering max(4 GiB, RAM rounded up to 1 GiB) with
// 2 MiB pages, rooted at layout::kPml4. Returns the number of GiB mapped.
std::uint64_t write_identity_page_tables(GuestMemory& mem);
void write_gdt(GuestMemory& mem);
// The Linux boot protocol wants its own selectors: __BOOT_CS = 0x10 (64-bit
// code) and __BOOT_DS = 0x18 (data); entries 0 and 1 are null.
inline constexpr std::uint16_t kLinuxBootCs = 0x10, kLinuxBootDs = 0x18;
void write_linux_gdt(GuestMemory& mem);

// Segment and control registers for the image kind; `sregs` should hold the
// vCPU's reset state (from KVM_GET_SREGS) so fields we do not set keep sane values.
void setup_sregs(kvm_sregs& sregs, ImageKind kind);
kvm_regs initial_regs(const BootInfo& info, const BootConfig& config, std::uint32_t vcpu);

// GDT descriptors, exposed for tests.
std::uint64_t gdt_entry(std::uint32_t base, std::uint32_t limit, std::uint16_t flags);

} // namespace hv
