#include "vmm/boot/boot_setup.hpp"

#include "vmm/boot/boot_writes.hpp"
#include "vmm/boot/guest_layout.hpp"
#include "vmm/boot/linux_boot.hpp"
#include "vmm/boot/pc_firmware.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <algorithm>
#include <cstring>

namespace hv {
namespace {

constexpr std::uint64_t kPtePresent = 1u << 0;
constexpr std::uint64_t kPteWrite = 1u << 1;
constexpr std::uint64_t kPteLarge = 1u << 7;

constexpr std::uint64_t kCr0Pe = 1u << 0, kCr0Mp = 1u << 1, kCr0Et = 1u << 4, kCr0Ne = 1u << 5,
                        kCr0Wp = 1u << 16, kCr0Pg = 1ull << 31;
constexpr std::uint64_t kCr4Pae = 1u << 5, kCr4Osfxsr = 1u << 9, kCr4Osxmmexcpt = 1u << 10;
constexpr std::uint64_t kEferSce = 1u << 0, kEferLme = 1u << 8, kEferLma = 1u << 10, kEferNxe = 1u << 11;

// Access/flag nibbles of a descriptor: bits 8-15 (P, DPL, S, type) and
// 20-23 (G, D/B, L, AVL) of the high dword, packed as 0xF0FF.
constexpr std::uint16_t kCode64 = 0xA09B; // G, L; present, S, exec/read, accessed
constexpr std::uint16_t kData = 0xC093;   // G, D/B; present, S, read/write, accessed
constexpr std::uint16_t kCode32 = 0xC09B; // G, D/B; present, S, exec/read, accessed

kvm_segment segment(std::uint16_t selector, std::uint16_t flags) {
    kvm_segment s{};
    s.base = 0;
    s.limit = 0xffffffff;
    s.selector = selector;
    s.type = flags & 0xf;
    s.s = (flags >> 4) & 1;
    s.dpl = (flags >> 5) & 3;
    s.present = (flags >> 7) & 1;
    s.avl = (flags >> 12) & 1;
    s.l = (flags >> 13) & 1;
    s.db = (flags >> 14) & 1;
    s.g = (flags >> 15) & 1;
    return s;
}

// Multiboot v1 information structure (the fields we fill).
struct MultibootInfo {
    std::uint32_t flags, mem_lower, mem_upper, boot_device, cmdline, mods_count, mods_addr;
    std::uint32_t syms[4];
    std::uint32_t mmap_length, mmap_addr;
    std::uint32_t drives_length, drives_addr, config_table, boot_loader_name, apm_table;
};
static_assert(sizeof(MultibootInfo) == 72);
struct MultibootModule {
    std::uint32_t mod_start, mod_end, string, reserved;
};
#pragma pack(push, 1)
struct MultibootMmapEntry {
    std::uint32_t size; // of the rest of the entry: 20
    std::uint64_t addr, len;
    std::uint32_t type; // 1 = available RAM, 2 = reserved
};
#pragma pack(pop)
static_assert(sizeof(MultibootMmapEntry) == 24);

constexpr std::uint32_t kMbiMem = 1u << 0, kMbiCmdline = 1u << 2, kMbiMods = 1u << 3, kMbiMmap = 1u << 6,
                        kMbiLoaderName = 1u << 9;

void write_multiboot_info(GuestMemory& mem, const BootImage& image, const BootConfig& config, BootInfo& info) {
    MultibootInfo mbi{};
    mbi.flags = kMbiMem | kMbiMmap | kMbiLoaderName | kMbiCmdline;
    mbi.mem_lower = static_cast<std::uint32_t>(layout::kLowMemoryEnd / 1024);
    const std::uint64_t below_4g = std::min<std::uint64_t>(config.ram_size, 4ull << 30);
    mbi.mem_upper = static_cast<std::uint32_t>((below_4g - layout::kImageStart) / 1024);
    mbi.cmdline = static_cast<std::uint32_t>(
        write_string(mem, layout::kCmdline, config.cmdline, layout::kCmdlineMax, "the command line"));
    info.cmdline_gpa = mbi.cmdline;

    const MultibootMmapEntry mmap[] = {
        {20, 0, layout::kLowMemoryEnd, 1},
        {20, layout::kLowMemoryEnd, layout::kImageStart - layout::kLowMemoryEnd, 2},
        {20, layout::kImageStart, config.ram_size - layout::kImageStart, 1},
    };
    must_write_obj(mem, layout::kMultibootMmap, mmap, "multiboot memory map");
    mbi.mmap_addr = layout::kMultibootMmap;
    mbi.mmap_length = sizeof mmap;

    std::uint64_t strings = layout::kBootStrings;
    const std::uint64_t strings_end = layout::kCmdline;
    auto add_string = [&](const std::string& s, const char* what) {
        const std::uint64_t at = write_string(mem, strings, s, strings_end - strings, what);
        strings += s.size() + 1;
        return static_cast<std::uint32_t>(at);
    };
    mbi.boot_loader_name = add_string("hv vmm", "boot loader name");

    // Modules go page-aligned after the image, below the vCPU stacks.
    std::uint64_t next = align_up(image_end(image), layout::kPageSize);
    const std::uint64_t limit = layout::stacks_base(config.ram_size, config.cpus);
    std::vector<MultibootModule> mods;
    for (const auto& m : config.modules) {
        if (next > limit || m.bytes.size() > limit - next)
            throw VmmError("initrd '" + m.name + "' (" + format_size(m.bytes.size()) +
                           ") does not fit in guest RAM between the image end (" + hex(next) +
                           ") and the vCPU stacks (" + hex(limit) + "); raise --mem");
        must_write(mem, next, m.bytes, "initrd");
        mods.push_back({static_cast<std::uint32_t>(next), static_cast<std::uint32_t>(next + m.bytes.size()),
                        add_string(m.name, "module name"), 0});
        next = align_up(next + m.bytes.size(), layout::kPageSize);
    }
    if (!mods.empty()) {
        must_write(mem, layout::kMultibootModules,
                   std::span(reinterpret_cast<const std::uint8_t*>(mods.data()), mods.size() * sizeof mods[0]),
                   "multiboot module list");
        mbi.flags |= kMbiMods;
        mbi.mods_count = static_cast<std::uint32_t>(mods.size());
        mbi.mods_addr = layout::kMultibootModules;
    }
    must_write_obj(mem, layout::kMultibootInfo, mbi, "multiboot info");
    info.multiboot_info = layout::kMultibootInfo;
}

} // namespace

std::uint64_t gdt_entry(std::uint32_t base, std::uint32_t limit, std::uint16_t flags) {
    return (std::uint64_t{base & 0xff000000u} << 32) | (std::uint64_t{flags & 0xf0ffu} << 40) |
           (std::uint64_t{limit & 0x000f0000u} << 32) | (std::uint64_t{base & 0x00ffffffu} << 16) |
           (limit & 0xffffu);
}

void write_gdt(GuestMemory& mem) {
    const std::uint64_t gdt[4] = {
        0,
        gdt_entry(0, 0xfffff, kCode64), // HV_GDT_CODE64
        gdt_entry(0, 0xfffff, kData),   // HV_GDT_DATA
        gdt_entry(0, 0xfffff, kCode32), // HV_GDT_CODE32
    };
    must_write_obj(mem, layout::kGdt, gdt, "GDT");
}

void write_linux_gdt(GuestMemory& mem) {
    const std::uint64_t gdt[4] = {
        0,
        0,
        gdt_entry(0, 0xfffff, kCode64), // kLinuxBootCs
        gdt_entry(0, 0xfffff, kData),   // kLinuxBootDs
    };
    must_write_obj(mem, layout::kGdt, gdt, "GDT");
}

std::uint64_t write_identity_page_tables(GuestMemory& mem) {
    const std::uint64_t ram_gib = align_up(mem.size(), 1ull << 30) >> 30;
    const std::uint64_t gib = std::max(layout::kMinIdentityGiB, ram_gib);
    if (gib > layout::kMaxMappedGiB)
        throw VmmError("guest RAM of " + format_size(mem.size()) + " exceeds the " +
                       std::to_string(layout::kMaxMappedGiB) + " GiB the identity map covers");
    must_write_obj(mem, layout::kPml4, layout::kPdpt | kPtePresent | kPteWrite, "PML4");
    for (std::uint64_t g = 0; g < gib; ++g) {
        const std::uint64_t pd = layout::kPageDirs + g * layout::kPageSize;
        must_write_obj(mem, layout::kPdpt + g * 8, pd | kPtePresent | kPteWrite, "PDPT");
        std::uint64_t entries[512];
        for (std::uint64_t i = 0; i < 512; ++i)
            entries[i] = ((g << 30) + (i << 21)) | kPtePresent | kPteWrite | kPteLarge;
        must_write_obj(mem, pd, entries, "page directory");
    }
    return gib;
}

BootInfo load_guest(GuestMemory& mem, const BootImage& image, const BootConfig& config, const std::string& name) {
    if (config.ram_size != mem.size()) throw VmmError("internal: RAM size mismatch");
    check_image_fits(image, config.ram_size, config.cpus, name);
    if (image.kind == ImageKind::Linux && !config.pc_firmware)
        throw VmmError("image '" + name + "' is a Linux kernel, which needs the PC platform (ACPI tables, interrupt "
                       "controllers, timers); got --platform bare: drop it (pc is the default)");
    if (image.kind == ImageKind::Multiboot && config.cpus != 1 && !config.pc_firmware)
        throw VmmError("image '" + name + "' is a multiboot image: its boot CPU starts the others through its local "
                       "APIC, which --platform bare does not provide; --cpus must be 1 (got " +
                       std::to_string(config.cpus) + "), or drop --platform bare (pc is the default)");
    if (config.pc_firmware) write_pc_firmware(mem, config.cpus);
    if (image.kind == ImageKind::Linux) return load_linux(mem, image, config, name);
    if (image.kind == ImageKind::Elf64 && !config.modules.empty())
        throw VmmError("--initrd is passed as a multiboot module; image '" + name +
                       "' is a 64-bit ELF, which has no way to receive it");

    for (const auto& s : image.segments) {
        auto dst = mem.span(s.gpa, s.mem_size);
        if (!dst) throw VmmError("internal: segment outside RAM after checks");
        std::memcpy(dst->data(), s.file_bytes.data(), s.file_bytes.size());
        std::memset(dst->data() + s.file_bytes.size(), 0, s.mem_size - s.file_bytes.size());
    }
    write_gdt(mem);
    write_identity_page_tables(mem);

    BootInfo info;
    info.kind = image.kind;
    info.entry = image.entry;
    info.cmdline = config.cmdline;
    if (image.kind == ImageKind::Multiboot) {
        write_multiboot_info(mem, image, config, info);
    } else if (!config.cmdline.empty()) {
        info.cmdline_gpa = write_string(mem, layout::kCmdline, config.cmdline, layout::kCmdlineMax, "the command line");
    }
    return info;
}

void setup_sregs(kvm_sregs& sregs, ImageKind kind) {
    sregs.gdt.base = layout::kGdt;
    sregs.gdt.limit = 4 * 8 - 1;
    const kvm_segment data = segment(kind == ImageKind::Linux ? kLinuxBootDs : HV_GDT_DATA, kData);
    sregs.ds = sregs.es = sregs.fs = sregs.gs = sregs.ss = data;
    if (kind == ImageKind::Elf64 || kind == ImageKind::Linux) {
        sregs.cs = segment(kind == ImageKind::Linux ? kLinuxBootCs : HV_GDT_CODE64, kCode64);
        sregs.cr3 = layout::kPml4;
        sregs.cr4 = kCr4Pae | kCr4Osfxsr | kCr4Osxmmexcpt;
        sregs.cr0 = kCr0Pe | kCr0Mp | kCr0Et | kCr0Ne | kCr0Wp | kCr0Pg;
        sregs.efer = kEferSce | kEferLme | kEferLma | kEferNxe;
    } else {
        // Multiboot: flat 32-bit protected mode with paging off.
        sregs.cs = segment(HV_GDT_CODE32, kCode32);
        sregs.cr0 = kCr0Pe | kCr0Et | kCr0Ne;
        sregs.cr3 = 0;
        sregs.cr4 = 0;
        sregs.efer = 0;
    }
}

kvm_regs initial_regs(const BootInfo& info, const BootConfig& config, std::uint32_t vcpu) {
    kvm_regs regs{};
    regs.rip = info.entry;
    regs.rflags = 0x2; // bit 1 is reserved-one; interrupts off
    regs.rsp = layout::stack_top(config.ram_size, vcpu);
    if (info.kind == ImageKind::Linux) {
        // Only the boot CPU starts here; the others wait for INIT/SIPI from it.
        regs.rsi = info.boot_params;
        regs.rsp = layout::kLinuxBootStack;
    } else if (info.kind == ImageKind::Elf64) {
        regs.rdi = vcpu;
        regs.rsi = config.cpus;
        regs.rdx = info.cmdline_gpa;
        regs.rcx = config.ram_size;
    } else {
        regs.rax = kMultibootBootMagic;
        regs.rbx = info.multiboot_info;
    }
    return regs;
}

} // namespace hv
