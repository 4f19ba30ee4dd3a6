// hv::check_image_fits over parsed images: where segments may
// lie (between 1 MiB and the vCPU stacks, inside RAM, not overlapping), the
// entry point, and the stacks' place with RAM above 4 GiB. Each refusal names
// the image and what was wrong. Parsing is in test_boot_image.cpp.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tests/support/boot_image_fixture.hpp"
#include "tests/support/elf_builder.hpp"
#include "tests/support/text_match.hpp"
#include "vmm/boot/boot_image.hpp"

using hv::BootImage;
using hv::test::BuiltElf;
using hv::test::contains;
using namespace hv::test::boot_image;

TEST_CASE("check_image_fits: accepts segments between 1 MiB and the stacks") {
    BootImage image;
    image.entry = 0x100000;
    image.segments = {seg(0x100000, 0x1000), seg(0x200000, 0x10000)};
    CHECK(fits_error(image, 4 << 20, 1) == "");
    // The last segment may end exactly where the stacks begin: 4 MiB - 4 * 16 KiB = 0x3f0000.
    image.segments.push_back(seg(0x300000, 0x3f0000 - 0x300000));
    CHECK(fits_error(image, 4 << 20, 4) == "");
}

TEST_CASE("check_image_fits: a segment in the reserved first MiB") {
    BootImage image;
    image.entry = 0x100000;
    image.segments = {seg(0xff000, 0x2000)};
    const std::string msg = fits_error(image, 4 << 20, 1);
    CHECK(contains(msg, "'img'"));
    CHECK(contains(msg, "[0xff000, 0x101000)"));
    CHECK(contains(msg, "reserved"));
    CHECK(contains(msg, "[0, 0x100000)"));
}

TEST_CASE("check_image_fits: a segment beyond RAM") {
    BootImage image;
    image.entry = 0x3ff000;
    image.segments = {seg(0x3ff000, 0x2000)};
    const std::string msg = fits_error(image, 4 << 20, 1);
    CHECK(contains(msg, "[0x3ff000, 0x401000)"));
    CHECK(contains(msg, "outside guest RAM"));
    CHECK(contains(msg, "4 MiB"));
    CHECK(contains(msg, "--mem"));
}

TEST_CASE("check_image_fits: a segment overlapping the vCPU stacks") {
    // 4 vCPUs x 16 KiB at the top of 4 MiB: stacks at [0x3f0000, 0x400000).
    BootImage image;
    image.entry = 0x300000;
    image.segments = {seg(0x300000, 0xf0001)}; // one byte into the stacks
    const std::string msg = fits_error(image, 4 << 20, 4);
    CHECK(contains(msg, "stacks"));
    CHECK(contains(msg, "[0x3f0000, 0x400000)"));
    CHECK(contains(msg, "4 x 16 KiB"));
    // The same segment fits with one vCPU: stacks at [0x3fc000, 0x400000).
    CHECK(fits_error(image, 4 << 20, 1) == "");
}

TEST_CASE("check_image_fits: overlapping segments, in either order") {
    BootImage image;
    image.entry = 0x100000;
    image.segments = {seg(0x101000, 0x2000), seg(0x100000, 0x1001)};
    std::string msg = fits_error(image, 4 << 20, 1);
    CHECK(contains(msg, "overlap"));
    CHECK(contains(msg, "[0x100000, 0x101001)"));
    CHECK(contains(msg, "0x101000"));

    // A segment nested in another, with a third one after both.
    image.segments = {seg(0x100000, 0x10000), seg(0x104000, 0x1000), seg(0x200000, 0x1000)};
    CHECK(contains(fits_error(image, 4 << 20, 1), "overlap"));

    // Touching is not overlapping.
    image.segments = {seg(0x101000, 0x2000), seg(0x100000, 0x1000)};
    CHECK(fits_error(image, 4 << 20, 1) == "");
}

TEST_CASE("check_image_fits: entry point outside every segment") {
    BootImage image;
    image.segments = {seg(0x100000, 0x1000), seg(0x200000, 0x1000)};
    image.entry = 0x500000;
    std::string msg = fits_error(image, 4 << 20, 1);
    CHECK(contains(msg, "entry point 0x500000"));
    CHECK(contains(msg, "outside"));

    image.entry = 0x101000; // one past the end of the first segment
    CHECK(contains(fits_error(image, 4 << 20, 1), "entry point 0x101000"));
    image.entry = 0x100fff; // its last byte
    CHECK(fits_error(image, 4 << 20, 1) == "");
    image.entry = 0x200800; // inside the second
    CHECK(fits_error(image, 4 << 20, 1) == "");
}

TEST_CASE("check_image_fits: a parsed image with bss checks mem_size, not file size") {
    const BuiltElf elf = hv::test::build_elf(two_segment_elf64());
    const BootImage image = hv::parse_boot_image(elf.file, "guest.elf");
    // The data segment's memory ends at 0x201000; RAM of 0x201000 + one stack fits...
    CHECK(fits_error(image, 0x201000 + 0x4000, 1) == "");
    // ...one page less does not, although its file bytes would.
    CHECK(contains(fits_error(image, 0x201000 + 0x3000, 1), "stacks"));
}

// With more than 4 GiB of RAM the stacks sit just below 4 GiB (abi.h), so a
// segment above 4 GiB is fine while one reaching into the stacks is not.
TEST_CASE("check_image_fits: RAM above 4 GiB puts the stacks below 4 GiB") {
    constexpr std::uint64_t GiB = 1ull << 30;
    BootImage image;
    image.entry = 5 * GiB;
    image.segments = {seg(5 * GiB, 0x10000)};
    CHECK(fits_error(image, 6 * GiB, 2) == "");
    // 2 stacks of 16 KiB: [4 GiB - 32 KiB, 4 GiB).
    image.entry = 4 * GiB - 0x10000;
    image.segments = {seg(4 * GiB - 0x10000, 0x10000)};
    const std::string msg = fits_error(image, 6 * GiB, 2);
    CHECK(contains(msg, "overlaps the vCPU stacks at [0xffff8000, 0x100000000)"));
}
