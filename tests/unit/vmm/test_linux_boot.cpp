// hv::load_linux (through load_guest): what a Linux kernel finds in guest
// RAM at its 64-bit entry. Offsets of struct boot_params are written out
// from the x86 boot protocol document (zero-page.rst), not taken from
// linux_boot.hpp, except where a test names the constant it checks.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "tests/support/boot_setup_fixture.hpp"
#include "tests/support/bzimage_builder.hpp"
#include "tests/support/text_match.hpp"
#include "vmm/boot/boot_image.hpp"
#include "vmm/boot/boot_setup.hpp"
#include "vmm/boot/guest_layout.hpp"
#include "vmm/boot/linux_boot.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/kvm/vmm_error.hpp"

using hv::BootConfig;
using hv::BootImage;
using hv::GuestMemory;
using namespace hv::test::boot_setup;
using hv::test::contains;

namespace {

struct LinuxFixture {
    std::vector<std::uint8_t> file;
    BootImage image;
    GuestMemory mem;
    BootConfig config;
    explicit LinuxFixture(std::uint64_t ram = 128 * MiB, hv::test::BzImageSpec spec = {})
        : file(hv::test::build_bzimage(spec)), image(hv::parse_boot_image(file, "vmlinuz")), mem(ram) {
        config.ram_size = ram;
    }
    hv::BootInfo load() { return hv::load_guest(mem, image, config, "vmlinuz"); }
    std::string load_error() {
        try {
            load();
        } catch (const hv::VmmError& e) {
            return e.what();
        }
        return "(no error)";
    }
    template <class T>
    T zp(std::size_t offset) const { return read_obj<T>(mem, hv::layout::kBootParams + offset); }
    std::string cstring(std::uint64_t gpa) const {
        std::string s;
        for (char c; (c = read_obj<char>(mem, gpa + s.size())) != '\0';) s += c;
        return s;
    }
};

} // namespace

TEST_CASE("load_linux: kernel at pref_address, entry 0x200 past it, boot_params in RSI") {
    hv::test::BzImageSpec spec;
    spec.kernel.assign(4096, 0);
    spec.kernel[0] = 0xfc; // cld: the 32-bit entry's first byte
    spec.kernel[0x200] = 0xfa; // and the 64-bit entry's
    LinuxFixture f(128 * MiB, spec);
    const hv::BootInfo info = f.load();
    CHECK(info.kind == hv::ImageKind::Linux);
    CHECK(info.entry == 0x1000200);
    CHECK(read_obj<std::uint8_t>(f.mem, 0x1000000) == 0xfc);
    CHECK(read_obj<std::uint8_t>(f.mem, 0x1000200) == 0xfa);
    const kvm_regs regs = hv::initial_regs(info, f.config, 0);
    CHECK(regs.rip == 0x1000200);
    CHECK(regs.rsi == hv::layout::kBootParams);
    CHECK((regs.rflags & (1u << 9)) == 0); // interrupts off
}

TEST_CASE("load_linux: boot_params holds the kernel's setup header, the loader type and the command line") {
    LinuxFixture f;
    f.config.cmdline = "console=ttyS0 quiet";
    f.load();
    // The header copy: setup_sects, "HdrS", version, pref_address, init_size.
    CHECK(f.zp<std::uint8_t>(0x1f1) == 3);
    CHECK(f.zp<std::uint32_t>(0x202) == 0x53726448);
    CHECK(f.zp<std::uint16_t>(0x206) == 0x020f);
    CHECK(f.zp<std::uint64_t>(0x258) == 0x1000000);
    CHECK(f.zp<std::uint32_t>(0x260) == 0x800000);
    CHECK(f.zp<std::uint8_t>(0x210) == 0xff); // type_of_loader: undefined
    const std::uint32_t cmd_line_ptr = f.zp<std::uint32_t>(0x228);
    CHECK(f.zp<std::uint32_t>(0x0c8) == 0); // ext_cmd_line_ptr
    CHECK(f.cstring(cmd_line_ptr) == "console=ttyS0 quiet");
    CHECK(f.zp<std::uint32_t>(0x218) == 0); // no initramfs
    CHECK(f.zp<std::uint32_t>(0x21c) == 0);
}

TEST_CASE("load_linux: without --cmdline the kernel's console is the serial port") {
    LinuxFixture f;
    const hv::BootInfo info = f.load();
    CHECK(f.cstring(f.zp<std::uint32_t>(0x228)) == "console=ttyS0");
    CHECK(info.cmdline == "console=ttyS0"); // what fw_cfg then tells the guest
}

TEST_CASE("load_linux: the command line may not exceed the kernel's cmdline_size") {
    hv::test::BzImageSpec spec;
    spec.cmdline_size = 255;
    LinuxFixture ok(128 * MiB, spec);
    ok.config.cmdline = std::string(255, 'a');
    CHECK(ok.load_error() == "(no error)");
    LinuxFixture too_long(128 * MiB, spec);
    too_long.config.cmdline = std::string(256, 'a');
    CHECK(too_long.load_error() == "the kernel command line is 256 bytes; at most 255 are supported");
}

TEST_CASE("load_linux: the e820 map reports RAM below 640 KiB and from 1 MiB to the end of RAM") {
    LinuxFixture f(200 * MiB);
    f.load();
    REQUIRE(f.zp<std::uint8_t>(0x1e8) == 3);
    struct Entry {
        std::uint64_t addr, size;
        std::uint32_t type;
    };
    const Entry expected[] = {{0, 0x9fc00, 1}, {0x9fc00, 0x100000 - 0x9fc00, 2}, {0x100000, 200 * MiB - 0x100000, 1}};
    for (int i = 0; i < 3; ++i) {
        const std::size_t at = 0x2d0 + 20 * static_cast<std::size_t>(i);
        CHECK(f.zp<std::uint64_t>(at) == expected[i].addr);
        CHECK(f.zp<std::uint64_t>(at + 8) == expected[i].size);
        CHECK(f.zp<std::uint32_t>(at + 16) == expected[i].type);
    }
    // Nothing the VMM wrote for the kernel lies in RAM the map hands out
    // above 1 MiB, except the kernel and the initramfs themselves.
    CHECK(hv::layout::kBootParams + 4096 <= 0x9fc00);
    CHECK(hv::layout::kCmdline + hv::layout::kCmdlineMax <= 0x9fc00);
}

TEST_CASE("load_linux: the initramfs lies page-aligned at the top of RAM, recorded in boot_params") {
    LinuxFixture f(128 * MiB);
    std::vector<std::uint8_t> initrd(10000);
    for (std::size_t i = 0; i < initrd.size(); ++i) initrd[i] = static_cast<std::uint8_t>(i ^ (i >> 8));
    f.config.modules.push_back({"initrd.cpio", initrd});
    f.load();
    const std::uint64_t expected_at = (128 * MiB - initrd.size()) & ~0xfffull;
    CHECK(f.zp<std::uint32_t>(0x218) == expected_at);
    CHECK(f.zp<std::uint32_t>(0x21c) == initrd.size());
    CHECK(f.zp<std::uint32_t>(0x0c0) == 0); // ext_ramdisk_image
    CHECK(f.zp<std::uint32_t>(0x0c4) == 0);
    std::vector<std::uint8_t> back(initrd.size());
    REQUIRE(f.mem.read(expected_at, back));
    CHECK(back == initrd);
}

TEST_CASE("load_linux: an initramfs that does not fit above the kernel's init_size is refused") {
    // Kernel at 16 MiB with 8 MiB init_size: 24 MiB are taken; 40 MiB of
    // RAM leave 16 MiB, so 16 MiB fit and 16 MiB + 1 page do not.
    LinuxFixture fits(40 * MiB);
    fits.config.modules.push_back({"a.cpio", std::vector<std::uint8_t>(16 * MiB)});
    CHECK(fits.load_error() == "(no error)");
    LinuxFixture too_big(40 * MiB);
    too_big.config.modules.push_back({"b.cpio", std::vector<std::uint8_t>(16 * MiB + 4096)});
    const std::string e = too_big.load_error();
    INFO(e);
    CHECK(contains(e, "initramfs 'b.cpio' (16.0 MiB) does not fit in guest RAM between the kernel's decompression "
                      "area (ends at 0x1800000) and 0x2800000"));
    CHECK(contains(e, "raise --mem"));
}

TEST_CASE("load_linux: initrd_addr_max caps where the initramfs goes") {
    hv::test::BzImageSpec spec;
    spec.initrd_addr_max = 0x1ffffff; // 32 MiB
    LinuxFixture f(128 * MiB, spec);
    f.config.modules.push_back({"i", std::vector<std::uint8_t>(4096, 1)});
    f.load();
    CHECK(f.zp<std::uint32_t>(0x218) == 0x1fff000);
}

TEST_CASE("load_linux: ACPI tables at the RSDP address boot_params gives, listing every CPU") {
    LinuxFixture f;
    f.config.cpus = 3;
    f.load();
    const std::uint64_t rsdp = f.zp<std::uint64_t>(0x070);
    CHECK(rsdp == hv::layout::kAcpiTables);
    CHECK(rsdp >= 0xe0000);
    CHECK(rsdp < 0x100000); // where Linux also scans for it
    std::vector<std::uint8_t> sig(8);
    REQUIRE(f.mem.read(rsdp, sig));
    CHECK(std::string(sig.begin(), sig.end()) == "RSD PTR ");
}

TEST_CASE("load_linux: GDT with __BOOT_CS at 0x10 and __BOOT_DS at 0x18, and long-mode segment registers") {
    LinuxFixture f;
    const hv::BootInfo info = f.load();
    const std::uint64_t cs = read_u64(f.mem, hv::layout::kGdt + 0x10);
    const std::uint64_t ds = read_u64(f.mem, hv::layout::kGdt + 0x18);
    CHECK(((cs >> 47) & 1) == 1);  // present
    CHECK(((cs >> 53) & 1) == 1);  // L: 64-bit code
    CHECK(((cs >> 43) & 1) == 1);  // executable
    CHECK(((ds >> 47) & 1) == 1);
    CHECK(((ds >> 43) & 1) == 0);  // data
    CHECK(((ds >> 41) & 1) == 1);  // writable
    kvm_sregs s{};
    hv::setup_sregs(s, info.kind);
    CHECK(s.cs.selector == 0x10);
    CHECK(s.cs.l == 1);
    CHECK(s.ds.selector == 0x18);
    CHECK(s.ss.selector == 0x18);
    CHECK((s.cr0 & 0x80000001u) == 0x80000001u); // PG, PE
    CHECK((s.efer & (1u << 10)) != 0);           // LMA
    // The identity map covers the kernel, boot_params and the command line.
    CHECK(s.cr3 == hv::layout::kPml4);
}
