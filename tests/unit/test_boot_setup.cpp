// hv::gdt_entry / write_gdt / write_identity_page_tables / load_guest /
// setup_sregs / initial_regs: the architectural state a guest starts in.
// Expected descriptor and page-table bits are derived from the Intel SDM
// (Vol. 3A) in the comments, not copied from boot_setup.cpp.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <elf.h>
#include <optional>
#include <string>
#include <vector>

#include "boot_image.hpp"
#include "boot_setup.hpp"
#include "elf_builder.hpp"
#include "guest_layout.hpp"
#include "guest_memory.hpp"
#include "hv/abi.h"
#include "vmm_error.hpp"

using hv::BootConfig;
using hv::BootImage;
using hv::BootInfo;
using hv::GuestMemory;
using hv::ImageKind;

namespace {

constexpr std::uint64_t MiB = 1ull << 20, GiB = 1ull << 30;

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

// Helpers that assert only when the read fails, so the assertion count
// reflects the checks the tests make.
template <class T>
T read_obj(const GuestMemory& mem, std::uint64_t gpa) {
    const auto v = mem.read_obj<T>(gpa);
    if (!v) FAIL("guest-physical " << gpa << " is outside RAM");
    return *v;
}
std::uint64_t read_u64(const GuestMemory& mem, std::uint64_t gpa) { return read_obj<std::uint64_t>(mem, gpa); }
std::uint32_t read_u32(const GuestMemory& mem, std::uint64_t gpa) { return read_obj<std::uint32_t>(mem, gpa); }
std::string read_cstring(const GuestMemory& mem, std::uint64_t gpa, std::size_t max = 8192) {
    std::string s;
    for (std::size_t i = 0; i < max; ++i) {
        const char c = read_obj<char>(mem, gpa + i);
        if (c == '\0') return s;
        s += c;
    }
    FAIL("no NUL terminator within " << max << " bytes at " << gpa);
    return s;
}
std::vector<std::uint8_t> read_bytes(const GuestMemory& mem, std::uint64_t gpa, std::size_t len) {
    std::vector<std::uint8_t> out(len);
    if (!mem.read(gpa, out)) FAIL("[" << gpa << ", +" << len << ") is outside RAM");
    return out;
}

// Guest RAM above 4 GiB for the tests that need it. The mapping is lazy
// (only the pages written are ever touched), but a host with strict
// overcommit (vm.overcommit_memory=2) may still refuse it; such a host
// cannot run these tests, which is reported rather than failed.
std::optional<GuestMemory> big_memory(std::uint64_t size) {
    try {
        return std::optional<GuestMemory>(std::in_place, size);
    } catch (const hv::VmmError& e) {
        MESSAGE("skipped: " << std::string(e.what()));
        return std::nullopt;
    }
}

std::string load_error(GuestMemory& mem, const BootImage& image, const BootConfig& config) {
    try {
        (void)hv::load_guest(mem, image, config, "img");
    } catch (const hv::VmmError& e) {
        return e.what();
    }
    return "";
}

// 64-bit entry code at 0x100000:
//   100000: 48 89 e5        mov    rbp, rsp
//   100003: 0f 0b           ud2
const std::vector<std::uint8_t> kCode64 = {0x48, 0x89, 0xe5, 0x0f, 0x0b};
// Data at 0x200000: 8 bytes, then bss to 0x3000.
const std::vector<std::uint8_t> kData = {1, 2, 3, 4, 5, 6, 7, 8};

struct ParsedImage {
    hv::test::BuiltElf elf; // owns the bytes the image's segments view
    BootImage image;
};

ParsedImage elf64_image() {
    hv::test::ElfSpec spec;
    spec.entry = 0x100000;
    spec.segments = {
        hv::test::ElfSegment{PT_LOAD, 0x100000, kCode64, std::nullopt},
        hv::test::ElfSegment{PT_LOAD, 0x200000, kData, 0x3000},
    };
    ParsedImage p{hv::test::build_elf(spec), {}};
    p.image = hv::parse_boot_image(p.elf.file, "guest.elf");
    return p;
}

// 32-bit multiboot entry at 0x100000 (0x1234 file bytes, 0x2000 in memory):
//   100000: fa              cli
//   100001: f4              hlt
//   100002: 90 ...          nop (padding)
ParsedImage multiboot_image() {
    std::vector<std::uint8_t> code(0x1234, 0x90);
    code[0] = 0xfa;
    code[1] = 0xf4;
    hv::test::ElfSpec spec;
    spec.elf32 = true;
    spec.entry = 0x100000;
    spec.segments = {hv::test::ElfSegment{PT_LOAD, 0x100000, code, 0x2000}};
    spec.multiboot = hv::test::multiboot_header(0x3);
    ParsedImage p{hv::test::build_elf(spec), {}};
    p.image = hv::parse_boot_image(p.elf.file, "mb.elf");
    return p;
}

} // namespace

// ---------------------------------------------------------------------------
// GDT descriptors. SDM Vol. 3A, 3.4.5 "Segment Descriptors" (Figure 3-8):
//   bits  0-15 limit[15:0]        bits 16-39 base[23:0]
//   bits 40-43 type  44 S  45-46 DPL  47 P
//   bits 48-51 limit[19:16]       52 AVL  53 L  54 D/B  55 G
//   bits 56-63 base[31:24]
// gdt_entry's `flags` packs the access byte in bits 0-7 and G/DB/L/AVL in
// bits 12-15 (header comment in boot_setup.cpp: "packed as 0xF0FF").

TEST_CASE("gdt_entry: flat 64-bit code descriptor is 0x00AF9B000000FFFF") {
    // Access byte: P=1, DPL=00, S=1, type=1011 (code, execute/read, accessed)
    //   = 1001 1011 = 0x9B.  Flags nibble: G=1, D=0 (must be 0 with L=1), L=1, AVL=0
    //   = 1010 = 0xA.  Limit 0xFFFFF -> limit[15:0] = 0xFFFF, limit[19:16] = 0xF.
    //   base 0.  => 0x00 | A | F | 9B | 000000 | FFFF
    CHECK(hv::gdt_entry(0, 0xfffff, 0xA09B) == 0x00AF9B000000FFFFull);
}

TEST_CASE("gdt_entry: flat data and 32-bit code descriptors") {
    // Data: P=1, S=1, type=0011 (read/write, accessed) = 0x93; G=1, B=1 -> 0xC.
    CHECK(hv::gdt_entry(0, 0xfffff, 0xC093) == 0x00CF93000000FFFFull);
    // 32-bit code: 0x9B as above; G=1, D=1, L=0 -> 0xC.
    CHECK(hv::gdt_entry(0, 0xfffff, 0xC09B) == 0x00CF9B000000FFFFull);
}

TEST_CASE("gdt_entry: base and limit are split across the descriptor") {
    // base 0x12345678: base[23:0] = 0x345678 -> bits 16-39, base[31:24] = 0x12 -> bits 56-63.
    // limit 0xABCDE: limit[15:0] = 0xBCDE, limit[19:16] = 0xA.
    // flags 0x4092: access 0x92 (P, S, data read/write), nibble 0x4 (D/B only).
    //   => 0x12 | 4 | A | 92 | 345678 | BCDE
    CHECK(hv::gdt_entry(0x12345678, 0xABCDE, 0x4092) == 0x124A92345678BCDEull);
}

TEST_CASE("gdt_entry: limit bits above 19 and flag bits 8-11 cannot leak into other fields") {
    CHECK(hv::gdt_entry(0, 0xffffffff, 0) == hv::gdt_entry(0, 0xfffff, 0));
    CHECK(hv::gdt_entry(0, 0, 0x0F00) == 0); // would land on limit[19:16]
}

TEST_CASE("write_gdt: null descriptor and the three ABI selectors") {
    GuestMemory mem(4 * MiB);
    std::vector<std::uint8_t> junk(64, 0xAA);
    REQUIRE(mem.write(hv::layout::kGdt, junk));
    hv::write_gdt(mem);
    CHECK(read_u64(mem, hv::layout::kGdt + 0) == 0);
    CHECK(read_u64(mem, hv::layout::kGdt + HV_GDT_CODE64) == 0x00AF9B000000FFFFull);
    CHECK(read_u64(mem, hv::layout::kGdt + HV_GDT_DATA) == 0x00CF93000000FFFFull);
    CHECK(read_u64(mem, hv::layout::kGdt + HV_GDT_CODE32) == 0x00CF9B000000FFFFull);
}

// ---------------------------------------------------------------------------
// Identity page tables. SDM Vol. 3A, 4.5 "4-Level Paging", Tables 4-15/4-17/4-18:
//   bit 0 P, bit 1 R/W, bit 7 PS (in a PDE: maps a 2 MiB page);
//   a PML4E/PDPTE holds the 4 KiB-aligned physical address of the next table.

TEST_CASE("write_identity_page_tables: 4 GiB minimum with 2 MiB pages") {
    GuestMemory mem(8 * MiB);
    CHECK(hv::write_identity_page_tables(mem) == 4);

    // PML4[0] -> PDPT at 0x3000, P|RW = 0x3 -> 0x3003. PML4[1] is absent.
    CHECK(read_u64(mem, 0x2000) == 0x3003);
    CHECK(read_u64(mem, 0x2000 + 8) == 0);
    // PDPT[g] -> page directory g at 0x4000 + g * 0x1000, P|RW.
    CHECK(read_u64(mem, 0x3000 + 0 * 8) == 0x4003);
    CHECK(read_u64(mem, 0x3000 + 1 * 8) == 0x5003);
    CHECK(read_u64(mem, 0x3000 + 3 * 8) == 0x7003);
    CHECK(read_u64(mem, 0x3000 + 4 * 8) == 0); // 4 GiB and up: not mapped
    // PD0[0] maps [0, 2 MiB): P|RW|PS = 0x1 | 0x2 | 0x80 = 0x83.
    CHECK(read_u64(mem, 0x4000) == 0x83);
    // PD0[1] maps [2 MiB, 4 MiB): 0x200000 | 0x83.
    CHECK(read_u64(mem, 0x4000 + 8) == 0x200083);
    // gva 0xC0A00000 = GiB 3, PD index (0xC0A00000 >> 21) & 511 = 0x605 & 0x1ff = 5.
    CHECK(read_u64(mem, 0x7000 + 5 * 8) == 0xC0A00083);
    // The last 2 MiB below 4 GiB: PD3[511] = 0xFFE00000 | 0x83 (e.g. the LAPIC page).
    CHECK(read_u64(mem, 0x7000 + 511 * 8) == 0xFFE00083);
}

TEST_CASE("write_identity_page_tables: RAM above 4 GiB maps RAM rounded up to 1 GiB") {
    // 5 GiB + 4 KiB of RAM -> 6 GiB mapped (only a few pages are ever touched).
    auto big = big_memory(5 * GiB + 4096);
    if (!big) return;
    GuestMemory& mem = *big;
    CHECK(hv::write_identity_page_tables(mem) == 6);
    CHECK(read_u64(mem, 0x3000 + 5 * 8) == ((0x4000 + 5 * 0x1000) | 0x3));
    CHECK(read_u64(mem, 0x3000 + 6 * 8) == 0);
    // PD5[0] maps 5 GiB = 0x140000000.
    CHECK(read_u64(mem, 0x4000 + 5 * 0x1000) == (0x140000000ull | 0x83));
    CHECK(read_u64(mem, 0x4000 + 5 * 0x1000 + 511 * 8) == ((6 * GiB - 2 * MiB) | 0x83));
}

TEST_CASE("write_identity_page_tables: exactly 4 GiB does not round up") {
    auto big = big_memory(4 * GiB);
    if (!big) return;
    GuestMemory& mem = *big;
    CHECK(hv::write_identity_page_tables(mem) == 4);
    CHECK(read_u64(mem, 0x3000 + 4 * 8) == 0);
}

// ---------------------------------------------------------------------------
// load_guest, ELF64

TEST_CASE("load_guest ELF64: segments copied, bss zeroed, GDT and page tables written") {
    auto p = elf64_image();
    GuestMemory mem(8 * MiB);
    // Poison the bss so zeroing is observable.
    std::vector<std::uint8_t> poison(0x3000, 0xAA);
    REQUIRE(mem.write(0x200000, poison));

    BootConfig config;
    config.ram_size = mem.size();
    const BootInfo info = hv::load_guest(mem, p.image, config, "guest.elf");

    CHECK(info.kind == ImageKind::Elf64);
    CHECK(info.entry == 0x100000);
    CHECK(info.cmdline_gpa == 0); // no --cmdline
    CHECK(info.multiboot_info == 0);
    CHECK(read_bytes(mem, 0x100000, kCode64.size()) == kCode64);
    CHECK(read_bytes(mem, 0x200000, kData.size()) == kData);
    CHECK(read_bytes(mem, 0x200000 + kData.size(), 0x3000 - kData.size()) ==
          std::vector<std::uint8_t>(0x3000 - kData.size(), 0));
    CHECK(read_u64(mem, hv::layout::kGdt + HV_GDT_CODE64) == 0x00AF9B000000FFFFull);
    CHECK(read_u64(mem, hv::layout::kPml4) == (hv::layout::kPdpt | 0x3));
}

TEST_CASE("load_guest ELF64: the command line is written at the address returned") {
    auto p = elf64_image();
    GuestMemory mem(8 * MiB);
    BootConfig config;
    config.ram_size = mem.size();
    config.cmdline = "console=ttyS0 loglevel=8";
    const BootInfo info = hv::load_guest(mem, p.image, config, "guest.elf");
    REQUIRE(info.cmdline_gpa != 0);
    CHECK(info.cmdline_gpa < HV_RESERVED_END); // in the VMM's region, not over the image
    CHECK(read_cstring(mem, info.cmdline_gpa) == config.cmdline);
    // It must not have clobbered the GDT or the page tables.
    CHECK(read_u64(mem, hv::layout::kGdt + HV_GDT_DATA) == 0x00CF93000000FFFFull);
    CHECK(read_u64(mem, hv::layout::kPml4) == 0x3003);
}

TEST_CASE("load_guest ELF64: command line length limit is 4095 bytes plus the NUL") {
    auto p = elf64_image();
    GuestMemory mem(8 * MiB);
    BootConfig config;
    config.ram_size = mem.size();
    config.cmdline = std::string(4095, 'x');
    const BootInfo info = hv::load_guest(mem, p.image, config, "guest.elf");
    CHECK(read_cstring(mem, info.cmdline_gpa) == config.cmdline);

    config.cmdline = std::string(4096, 'x');
    const std::string msg = load_error(mem, p.image, config);
    CHECK(contains(msg, "command line"));
    CHECK(contains(msg, "4096 bytes"));
    CHECK(contains(msg, "4095"));
}

TEST_CASE("load_guest ELF64: --initrd is rejected") {
    auto p = elf64_image();
    GuestMemory mem(8 * MiB);
    BootConfig config;
    config.ram_size = mem.size();
    config.modules.push_back({"initrd.img", {1, 2, 3}});
    const std::string msg = load_error(mem, p.image, config);
    CHECK(contains(msg, "--initrd"));
    CHECK(contains(msg, "64-bit ELF"));
}

TEST_CASE("load_guest: the image must fit (check_image_fits runs first)") {
    auto p = elf64_image();
    GuestMemory mem(4 * MiB);
    BootConfig config;
    config.ram_size = mem.size();
    config.cpus = 192; // 192 x 16 KiB = 3 MiB of stacks: [1 MiB, 4 MiB)
    CHECK(contains(load_error(mem, p.image, config), "stacks"));
    // Nothing was written: the segment's bytes are still zero.
    CHECK(read_bytes(mem, 0x100000, kCode64.size()) == std::vector<std::uint8_t>(kCode64.size(), 0));
}

TEST_CASE("load_guest: config.ram_size must match the memory") {
    auto p = elf64_image();
    GuestMemory mem(4 * MiB);
    BootConfig config;
    config.ram_size = 8 * MiB;
    CHECK_THROWS_AS(hv::load_guest(mem, p.image, config, "guest.elf"), hv::VmmError);
}

// ---------------------------------------------------------------------------
// load_guest, multiboot. Multiboot Specification 0.6.96, 3.3 "Boot
// information format": offsets of the fields checked below:
//   0 flags, 4 mem_lower, 8 mem_upper, 16 cmdline, 20 mods_count, 24 mods_addr,
//   44 mmap_length, 48 mmap_addr, 64 boot_loader_name.
// Flags: bit 0 mem_*, 2 cmdline, 3 mods, 6 mmap, 9 boot_loader_name.
// mmap entries: u32 size (of the rest, 20), u64 base_addr, u64 length, u32 type.
// Module entries: u32 mod_start, mod_end, string, reserved.

TEST_CASE("load_guest multiboot: info structure, memory map and command line") {
    auto p = multiboot_image();
    const std::uint64_t ram = 8 * MiB;
    GuestMemory mem(ram);
    BootConfig config;
    config.ram_size = ram;
    config.cmdline = "root=/dev/ram0 quiet";
    const BootInfo info = hv::load_guest(mem, p.image, config, "mb.elf");

    CHECK(info.kind == ImageKind::Multiboot);
    CHECK(info.entry == 0x100000);
    REQUIRE(info.multiboot_info != 0);
    REQUIRE(info.multiboot_info < 4 * GiB); // EBX is 32 bits
    const std::uint64_t mbi = info.multiboot_info;

    const std::uint32_t flags = read_u32(mem, mbi + 0);
    CHECK((flags & (1u << 0)) != 0); // mem_lower/mem_upper
    CHECK((flags & (1u << 2)) != 0); // cmdline
    CHECK((flags & (1u << 3)) == 0); // no modules
    CHECK((flags & (1u << 6)) != 0); // mmap
    // mem_lower: conventional memory below the EBDA, 0x9fc00 bytes = 639 KiB.
    CHECK(read_u32(mem, mbi + 4) == 639);
    // mem_upper: KiB from 1 MiB to the end of RAM = (8 MiB - 1 MiB) / 1 KiB = 7168.
    CHECK(read_u32(mem, mbi + 8) == 7168);

    const std::uint32_t cmdline = read_u32(mem, mbi + 16);
    CHECK(cmdline == info.cmdline_gpa);
    CHECK(read_cstring(mem, cmdline) == config.cmdline);

    if (flags & (1u << 9)) CHECK_FALSE(read_cstring(mem, read_u32(mem, mbi + 64)).empty());

    // The memory map must describe [0, RAM) contiguously, with everything
    // from 1 MiB up available (type 1) and the VGA/BIOS hole not.
    const std::uint32_t mmap_length = read_u32(mem, mbi + 44);
    const std::uint32_t mmap_addr = read_u32(mem, mbi + 48);
    REQUIRE(mmap_length % 24 == 0);
    REQUIRE(mmap_length >= 24);
    std::uint64_t next_addr = 0;
    bool saw_high_ram = false;
    for (std::uint32_t off = 0; off < mmap_length; off += 24) {
        const std::uint64_t e = mmap_addr + off;
        CHECK(read_u32(mem, e) == 20);
        const std::uint64_t base = read_u64(mem, e + 4);
        const std::uint64_t len = read_u64(mem, e + 12);
        const std::uint32_t type = read_u32(mem, e + 20);
        CAPTURE(base);
        CHECK(base == next_addr);
        next_addr = base + len;
        if (base >= 0xA0000 && base < 0x100000) CHECK(type != 1);
        if (base == 0x100000) {
            CHECK(type == 1);
            CHECK(len == ram - 0x100000);
            saw_high_ram = true;
        }
        if (base == 0) {
            CHECK(type == 1);
            CHECK(len == 0x9fc00);
        }
    }
    CHECK(next_addr == ram);
    CHECK(saw_high_ram);
}

TEST_CASE("load_guest multiboot: modules placed page-aligned after the image") {
    auto p = multiboot_image(); // image ends at 0x100000 + 0x2000 = 0x102000
    const std::uint64_t ram = 8 * MiB;
    GuestMemory mem(ram);
    BootConfig config;
    config.ram_size = ram;
    std::vector<std::uint8_t> initrd(5000);
    for (std::size_t i = 0; i < initrd.size(); ++i) initrd[i] = static_cast<std::uint8_t>(i * 7);
    const std::vector<std::uint8_t> second = {0xde, 0xad, 0xbe, 0xef};
    config.modules.push_back({"initrd.cpio", initrd});
    config.modules.push_back({"extra.bin", second});
    const BootInfo info = hv::load_guest(mem, p.image, config, "mb.elf");
    const std::uint64_t mbi = info.multiboot_info;

    CHECK((read_u32(mem, mbi) & (1u << 3)) != 0);
    REQUIRE(read_u32(mem, mbi + 20) == 2);
    const std::uint32_t mods = read_u32(mem, mbi + 24);

    // First module: at the first page boundary at or after the image end, 0x102000.
    CHECK(read_u32(mem, mods + 0) == 0x102000);
    CHECK(read_u32(mem, mods + 4) == 0x102000 + 5000);
    CHECK(read_cstring(mem, read_u32(mem, mods + 8)) == "initrd.cpio");
    CHECK(read_bytes(mem, 0x102000, initrd.size()) == initrd);
    // Second: 0x102000 + 5000 = 0x103388 rounded up to 0x104000.
    CHECK(read_u32(mem, mods + 16) == 0x104000);
    CHECK(read_u32(mem, mods + 20) == 0x104004);
    CHECK(read_cstring(mem, read_u32(mem, mods + 24)) == "extra.bin");
    CHECK(read_bytes(mem, 0x104000, 4) == second);
    // The image itself is intact.
    CHECK(read_bytes(mem, 0x100000, 2) == std::vector<std::uint8_t>{0xfa, 0xf4});
}

TEST_CASE("load_guest multiboot: an initrd must fit between the image and the stack") {
    auto p = multiboot_image();
    const std::uint64_t ram = 4 * MiB;
    GuestMemory mem(ram);
    BootConfig config;
    config.ram_size = ram;
    // Room: from 0x102000 to the stack at 4 MiB - 16 KiB = 0x3fc000 -> 0x2fa000 bytes.
    config.modules.push_back({"exact.img", std::vector<std::uint8_t>(0x2fa000, 0x5a)});
    CHECK(load_error(mem, p.image, config) == "");

    config.modules[0] = {"big.img", std::vector<std::uint8_t>(0x2fa001, 0x5a)};
    const std::string msg = load_error(mem, p.image, config);
    CHECK(contains(msg, "'big.img'"));
    CHECK(contains(msg, "does not fit"));
    CHECK(contains(msg, "--mem"));
}

TEST_CASE("load_guest multiboot: more than one vCPU is rejected") {
    auto p = multiboot_image();
    GuestMemory mem(8 * MiB);
    BootConfig config;
    config.ram_size = mem.size();
    config.cpus = 2;
    const std::string msg = load_error(mem, p.image, config);
    CHECK(contains(msg, "multiboot"));
    CHECK(contains(msg, "--cpus must be 1 (got 2)"));
}

// ---------------------------------------------------------------------------
// setup_sregs. SDM Vol. 3A 2.5 (CR0, CR4) and 2.2.1 / Vol. 4 (IA32_EFER):
//   CR0: PE bit 0, MP 1, NE 5, WP 16, PG 31; CD 30 and NW 29 must be clear.
//   CR4: PAE bit 5, OSFXSR 9, OSXMMEXCPT 10, LA57 12.
//   EFER: SCE bit 0, LME 8, LMA 10, NXE 11.

namespace {
kvm_sregs reset_sregs() {
    kvm_sregs s{};
    s.apic_base = 0xfee00900; // KVM's reset value; must survive setup_sregs
    s.cr0 = 0x60000010;       // CD|NW|ET at reset
    s.cs.selector = 0xf000;
    s.cs.base = 0xffff0000;
    return s;
}
} // namespace

TEST_CASE("setup_sregs ELF64: long mode with paging, 64-bit CS") {
    kvm_sregs s = reset_sregs();
    hv::setup_sregs(s, ImageKind::Elf64);

    const std::uint64_t cr0_required = (1ull << 0) | (1ull << 1) | (1ull << 5) | (1ull << 16) | (1ull << 31);
    CHECK((s.cr0 & cr0_required) == cr0_required);
    CHECK((s.cr0 & ((1ull << 30) | (1ull << 29))) == 0); // caches on
    const std::uint64_t cr4_required = (1ull << 5) | (1ull << 9) | (1ull << 10);
    CHECK((s.cr4 & cr4_required) == cr4_required);
    CHECK((s.cr4 & (1ull << 12)) == 0); // 4-level paging, which is what we built
    CHECK(s.efer == ((1ull << 0) | (1ull << 8) | (1ull << 10) | (1ull << 11))); // 0xd01
    CHECK(s.cr3 == hv::layout::kPml4);

    CHECK(s.cs.selector == HV_GDT_CODE64);
    CHECK(s.cs.l == 1);
    CHECK(s.cs.db == 0); // D must be 0 when L is 1
    CHECK(s.cs.present == 1);
    CHECK(s.cs.s == 1);
    CHECK(s.cs.type == 0xB);
    CHECK(s.cs.dpl == 0);
    CHECK(s.cs.base == 0);
    for (const kvm_segment* seg : {&s.ds, &s.es, &s.fs, &s.gs, &s.ss}) {
        CHECK(seg->selector == HV_GDT_DATA);
        CHECK(seg->present == 1);
        CHECK(seg->type == 0x3);
        CHECK(seg->s == 1);
        CHECK(seg->base == 0);
    }
    CHECK(s.gdt.base == hv::layout::kGdt);
    CHECK(s.gdt.limit == 4 * 8 - 1); // null + three descriptors
    CHECK(s.apic_base == 0xfee00900);
}

TEST_CASE("setup_sregs: the hidden CS/SS state matches the GDT descriptors") {
    // Decode the in-memory descriptors by the SDM layout and compare them to
    // the cached segment state KVM will load.
    GuestMemory mem(4 * MiB);
    hv::write_gdt(mem);
    auto check_matches = [&](const kvm_segment& seg) {
        CAPTURE(seg.selector);
        const std::uint64_t d = read_u64(mem, hv::layout::kGdt + (seg.selector & ~7u));
        CHECK(seg.type == ((d >> 40) & 0xf));
        CHECK(seg.s == ((d >> 44) & 1));
        CHECK(seg.dpl == ((d >> 45) & 3));
        CHECK(seg.present == ((d >> 47) & 1));
        CHECK(seg.l == ((d >> 53) & 1));
        CHECK(seg.db == ((d >> 54) & 1));
        CHECK(seg.g == ((d >> 55) & 1));
        const std::uint64_t limit = (d & 0xffff) | (((d >> 48) & 0xf) << 16);
        CHECK(seg.limit == (((d >> 55) & 1) ? (limit << 12) | 0xfff : limit));
    };
    for (ImageKind kind : {ImageKind::Elf64, ImageKind::Multiboot}) {
        kvm_sregs s = reset_sregs();
        hv::setup_sregs(s, kind);
        check_matches(s.cs);
        check_matches(s.ss);
        check_matches(s.ds);
    }
}

TEST_CASE("setup_sregs multiboot: 32-bit protected mode, paging off") {
    kvm_sregs s = reset_sregs();
    hv::setup_sregs(s, ImageKind::Multiboot);
    CHECK((s.cr0 & 1) == 1);                    // PE
    CHECK((s.cr0 & (1ull << 31)) == 0);         // PG off
    CHECK((s.cr0 & ((1ull << 30) | (1ull << 29))) == 0);
    CHECK((s.cr4 & (1ull << 5)) == 0);          // no PAE
    CHECK((s.efer & ((1ull << 8) | (1ull << 10))) == 0); // no LME/LMA
    CHECK(s.cs.selector == HV_GDT_CODE32);
    CHECK(s.cs.l == 0);
    CHECK(s.cs.db == 1); // 32-bit default operand size
    CHECK(s.cs.base == 0);
    CHECK(s.ss.selector == HV_GDT_DATA);
    CHECK(s.ss.db == 1); // 32-bit stack pointer (ESP)
    CHECK(s.apic_base == 0xfee00900);
}

// ---------------------------------------------------------------------------
// initial_regs: the boot ABI in guest/include/hv/abi.h.

TEST_CASE("initial_regs ELF64: RDI/RSI/RDX/RCX/RSP per vCPU") {
    BootInfo info;
    info.kind = ImageKind::Elf64;
    info.entry = 0x100040;
    info.cmdline_gpa = 0x54000;
    BootConfig config;
    config.ram_size = 8 * MiB;
    config.cpus = 3;
    for (std::uint32_t vcpu = 0; vcpu < 3; ++vcpu) {
        CAPTURE(vcpu);
        const kvm_regs r = hv::initial_regs(info, config, vcpu);
        CHECK(r.rip == 0x100040);
        CHECK(r.rdi == vcpu);
        CHECK(r.rsi == 3);
        CHECK(r.rdx == 0x54000);
        CHECK(r.rcx == 8 * MiB);
        // vCPU i owns [ram - (i+1)*16K, ram - i*16K): its stack top is ram - i*16K.
        CHECK(r.rsp == 8 * MiB - vcpu * 0x4000ull);
        CHECK(r.rsp % 16 == 0);
        CHECK((r.rflags & (1u << 9)) == 0); // IF clear
        CHECK((r.rflags & (1u << 1)) != 0); // reserved bit 1 is always 1
    }
}

TEST_CASE("initial_regs multiboot: EAX magic, EBX info, ESP at the top of RAM") {
    BootInfo info;
    info.kind = ImageKind::Multiboot;
    info.entry = 0x100000;
    info.multiboot_info = 0x50000;
    BootConfig config;
    config.ram_size = 16 * MiB;
    const kvm_regs r = hv::initial_regs(info, config, 0);
    CHECK(r.rax == 0x2BADB002); // Multiboot Specification 3.2, "Machine state"
    CHECK(r.rbx == 0x50000);
    CHECK(r.rip == 0x100000);
    CHECK(r.rsp == 16 * MiB);
    CHECK((r.rflags & (1u << 9)) == 0);
}

// A multiboot guest runs in 32-bit protected mode with paging off, so only
// ESP (the low 32 bits of RSP) exists and only the first 4 GiB are
// addressable. With more RAM than that, the stack at the top of RAM is out
// of reach: either the VMM refuses the configuration or it must hand the
// guest a stack it can use.
TEST_CASE("load_guest multiboot with more than 4 GiB of RAM: the initial stack is addressable") {
    auto p = multiboot_image();
    const std::uint64_t ram = 4 * GiB + 64 * MiB;
    auto big = big_memory(ram);
    if (!big) return;
    GuestMemory& mem = *big;
    BootConfig config;
    config.ram_size = ram;
    BootInfo info;
    try {
        info = hv::load_guest(mem, p.image, config, "mb.elf");
    } catch (const hv::VmmError& e) {
        MESSAGE("rejected: " << std::string(e.what()));
        return; // refusing is an acceptable fix
    }
    const kvm_regs r = hv::initial_regs(info, config, 0);
    CAPTURE(r.rsp);
    CHECK(r.rsp <= 4 * GiB);           // ESP can hold it (4 GiB itself wraps to 0 on the first push)
    CHECK(r.rsp >= HV_RESERVED_END + HV_STACK_SIZE);
    CHECK(r.rsp <= ram);
}
