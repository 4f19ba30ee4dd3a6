// hv::load_guest: ELF64 and multiboot images copied into guest RAM with
// their command line, modules and multiboot information, and the
// configurations it refuses. The multiboot layout is checked against the
// Multiboot Specification in the comments, not copied from boot_setup.cpp.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <elf.h>
#include <optional>
#include <string>
#include <vector>

#include "hv/abi.h"
#include "tests/support/boot_setup_fixture.hpp"
#include "tests/support/elf_builder.hpp"
#include "tests/support/text_match.hpp"
#include "vmm/boot/boot_image.hpp"
#include "vmm/boot/boot_setup.hpp"
#include "vmm/boot/guest_layout.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/kvm/vmm_error.hpp"

using hv::BootConfig;
using hv::BootImage;
using hv::BootInfo;
using hv::GuestMemory;
using hv::ImageKind;
using namespace hv::test::boot_setup;
using hv::test::contains;
using hv::test::message_of;

namespace {

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

std::string load_error(GuestMemory& mem, const BootImage& image, const BootConfig& config) {
    return message_of<hv::VmmError>([&] { (void)hv::load_guest(mem, image, config, "img"); });
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
    CHECK(info.cmdline == config.cmdline);
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

TEST_CASE("load_guest multiboot: more than one vCPU needs the PC platform's local APICs") {
    auto p = multiboot_image();
    GuestMemory mem(8 * MiB);
    BootConfig config;
    config.ram_size = mem.size();
    config.cpus = 2;
    config.pc_firmware = false; // --platform bare
    const std::string msg = load_error(mem, p.image, config);
    CHECK(contains(msg, "multiboot"));
    CHECK(contains(msg, "--platform bare does not provide; --cpus must be 1 (got 2)"));
    config.pc_firmware = true;
    CHECK(load_error(mem, p.image, config) == "");
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
