// hv::parse_bzimage / linux_load_address and their use by parse_boot_image
// and check_image_fits, over bzImages built by bzimage_builder.hpp.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tests/support/bzimage_builder.hpp"
#include "tests/support/text_match.hpp"
#include "vmm/boot/boot_image.hpp"
#include "vmm/boot/bzimage.hpp"
#include "vmm/kvm/vmm_error.hpp"

using hv::test::build_bzimage;
using hv::test::BzImageSpec;
using hv::test::contains;
using hv::test::message_of;

namespace {

std::string parse_error(const std::vector<std::uint8_t>& file) {
    return message_of<hv::VmmError>([&] { hv::parse_bzimage(file, "vmlinuz"); }, "(no error)");
}

} // namespace

TEST_CASE("parse_bzimage: reads the header fields and finds the protected-mode kernel") {
    BzImageSpec spec;
    spec.kernel.assign(8192, 0);
    for (std::size_t i = 0; i < spec.kernel.size(); ++i) spec.kernel[i] = static_cast<std::uint8_t>(i * 7);
    const auto file = build_bzimage(spec);
    const hv::LinuxKernel k = hv::parse_bzimage(file, "vmlinuz");
    CHECK(k.protocol == 0x020f);
    CHECK(k.pref_address == 0x1000000);
    CHECK(k.kernel_alignment == 0x200000);
    CHECK(k.relocatable);
    CHECK(k.init_size == 0x800000);
    CHECK(k.cmdline_size == 2047);
    CHECK(k.initrd_addr_max == 0x7fffffff);
    // The kernel starts after the boot sector and 3 setup sectors.
    CHECK(k.kernel.data() == file.data() + 4 * 512);
    CHECK(std::vector<std::uint8_t>(k.kernel.begin(), k.kernel.end()) == spec.kernel);
    // The header copy runs from 0x1f1 to 0x202 + the jump byte.
    REQUIRE(k.setup_header.size() == 0x268 - 0x1f1);
    CHECK(k.setup_header[0] == 3);                    // setup_sects
    CHECK(k.setup_header[0x202 - 0x1f1] == 'H');      // "HdrS"
    CHECK(k.setup_header[0x206 - 0x1f1] == 0x0f);     // version, low byte
}

TEST_CASE("parse_bzimage: setup_sects 0 means 4") {
    BzImageSpec spec;
    spec.setup_sects = 0;
    const auto file = build_bzimage(spec);
    const hv::LinuxKernel k = hv::parse_bzimage(file, "vmlinuz");
    CHECK(k.kernel.data() == file.data() + 5 * 512);
}

TEST_CASE("parse_bzimage: refuses protocols before 2.12, which cannot say they have a 64-bit entry") {
    BzImageSpec spec;
    spec.version = 0x020b;
    CHECK(parse_error(build_bzimage(spec)) ==
          "image 'vmlinuz': Linux boot protocol 2.11 is too old: at least 2.12 is needed for the 64-bit entry "
          "(kernels since 3.8)");
    spec.version = 0x020c;
    CHECK(parse_error(build_bzimage(spec)) == "(no error)");
}

TEST_CASE("parse_bzimage: refuses a kernel without XLF_KERNEL_64 and a zImage") {
    BzImageSpec no64;
    no64.xloadflags = 0x02;
    CHECK(contains(parse_error(build_bzimage(no64)), "no 64-bit entry point (xloadflags 0x2 without XLF_KERNEL_64)"));
    BzImageSpec zimage;
    zimage.loadflags = 0;
    CHECK(contains(parse_error(build_bzimage(zimage)), "a zImage (loadflags 0x0 without LOADED_HIGH)"));
}

TEST_CASE("parse_bzimage: a truncated file says where the kernel should be and how long the file is") {
    auto file = build_bzimage(BzImageSpec{});
    const std::size_t full = file.size();
    file.resize(full - 1);
    CHECK(parse_error(file) ==
          "image 'vmlinuz': truncated: the protected-mode kernel should occupy bytes [0x800, 0x1800) "
          "(setup_sects 3, syssize 256) but the file has " + std::to_string(full - 1) + " bytes");
    file.resize(0x210); // inside the header
    CHECK(contains(parse_error(file), "truncated: the setup header runs to 0x268 but the file has 528 bytes"));
}

TEST_CASE("parse_bzimage: header fields that cannot be right") {
    BzImageSpec short_header;
    short_header.header_end_jump = 0x40;
    CHECK(contains(parse_error(build_bzimage(short_header)), "setup header ends at 0x242, before the fields"));
    BzImageSpec small_init;
    small_init.init_size = 0x800;
    CHECK(contains(parse_error(build_bzimage(small_init)), "init_size 0x800 is smaller than the kernel"));
    BzImageSpec odd_align;
    odd_align.kernel_alignment = 0x300000;
    CHECK(contains(parse_error(build_bzimage(odd_align)), "kernel_alignment 0x300000 is not a power of two"));
    BzImageSpec low_pref;
    low_pref.pref_address = 0x80000;
    CHECK(contains(parse_error(build_bzimage(low_pref)), "pref_address 0x80000 is not a page-aligned address"));
    BzImageSpec magic;
    magic.bad_magic = true;
    CHECK(contains(parse_error(build_bzimage(magic)), "not a bzImage"));
}

TEST_CASE("linux_load_address: pref_address when it fits, else the lowest aligned address for a relocatable kernel") {
    BzImageSpec spec;
    spec.init_size = 0x3000000; // 48 MiB
    const auto file = build_bzimage(spec);
    const hv::LinuxKernel k = hv::parse_bzimage(file, "vmlinuz");
    CHECK(hv::linux_load_address(k, 64ull << 20) == 0x1000000);      // 16 + 48 = 64 MiB: just fits
    CHECK(hv::linux_load_address(k, (64ull << 20) - 4096) == 0x200000);
    CHECK(hv::linux_load_address(k, 50ull << 20) == 0x200000);
    CHECK(!hv::linux_load_address(k, 48ull << 20));
    spec.relocatable = 0;
    const auto fixed_file = build_bzimage(spec);
    const hv::LinuxKernel fixed = hv::parse_bzimage(fixed_file, "vmlinuz");
    CHECK(!hv::linux_load_address(fixed, 60ull << 20));
}

TEST_CASE("parse_boot_image detects a bzImage, and check_image_fits checks RAM for it") {
    BzImageSpec spec;
    spec.init_size = 0x3000000;
    const auto file = build_bzimage(spec);
    const hv::BootImage image = hv::parse_boot_image(file, "vmlinuz");
    CHECK(image.kind == hv::ImageKind::Linux);
    REQUIRE(image.linux_kernel);
    CHECK(image.segments.empty());
    CHECK_NOTHROW(hv::check_image_fits(image, 256ull << 20, 2, "vmlinuz"));
    CHECK_NOTHROW(hv::check_image_fits(image, 3ull << 30, 2, "vmlinuz"));
    try {
        hv::check_image_fits(image, (3ull << 30) + 4096, 1, "vmlinuz");
        FAIL("RAM reaching into the APIC window was accepted");
    } catch (const hv::VmmError& e) {
        CHECK(contains(e.what(), "a Linux guest can have at most 3 GiB of RAM"));
    }
    try {
        hv::check_image_fits(image, 32ull << 20, 1, "vmlinuz");
        FAIL("too little RAM was accepted");
    } catch (const hv::VmmError& e) {
        CHECK(std::string(e.what()) ==
              "image 'vmlinuz': the kernel needs 48 MiB (init_size) from its load address 0x1000000 or a lower aligned "
              "one, more than guest RAM (32 MiB) holds; raise --mem (at least 50 MiB)");
    }
}
