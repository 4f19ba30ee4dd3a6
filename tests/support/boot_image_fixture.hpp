#pragma once
// Shared by the boot image tests (test_boot_image*.cpp): the ELF images
// they build with elf_builder.hpp, and the messages parse_boot_image and
// check_image_fits reject an image with.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <elf.h>
#include <optional>
#include <string>
#include <vector>

#include "tests/support/elf_builder.hpp"
#include "tests/support/text_match.hpp"
#include "vmm/boot/boot_image.hpp"
#include "vmm/kvm/vmm_error.hpp"

namespace hv::test::boot_image {

// Text segment, linked at 0x100000:
//   100000: bf 2a 00 00 00    mov    edi, 0x2a
//   100005: 66 ba f4 00       mov    dx, 0xf4
//   100009: 89 f8             mov    eax, edi
//   10000b: ee                out    dx, al
//   10000c: f4                hlt
inline const std::vector<std::uint8_t> kText = {0xbf, 0x2a, 0x00, 0x00, 0x00, 0x66, 0xba, 0xf4,
                                                0x00, 0x89, 0xf8, 0xee, 0xf4};
// Data segment at 0x200000: 16 file bytes followed by bss up to 0x1000.
inline const std::vector<std::uint8_t> kData = {'h', 'e', 'l', 'l', 'o', ',', ' ', 'w',
                                                'o', 'r', 'l', 'd', '!', '\n', 0, 0};

inline ElfSpec two_segment_elf64() {
    ElfSpec spec;
    spec.entry = 0x100000;
    spec.segments = {
        ElfSegment{PT_LOAD, 0x100000, kText, std::nullopt},
        ElfSegment{PT_LOAD, 0x200000, kData, 0x1000},
    };
    return spec;
}

inline ElfSpec multiboot_elf32(std::uint32_t flags) {
    ElfSpec spec;
    spec.elf32 = true;
    spec.entry = 0x100000;
    spec.segments = {ElfSegment{PT_LOAD, 0x100000, kText, 0x2000}};
    spec.multiboot = hv::test::multiboot_header(flags);
    return spec;
}

// The VmmError message parse_boot_image throws, or "" when it accepts the image.
inline std::string parse_error(const std::vector<std::uint8_t>& file, const std::string& name = "guest.elf") {
    return message_of<hv::VmmError>([&] { (void)hv::parse_boot_image(file, name); });
}

inline std::string fits_error(const BootImage& image, std::uint64_t ram, std::uint32_t cpus) {
    return message_of<hv::VmmError>([&] { hv::check_image_fits(image, ram, cpus, "img"); });
}

template <class T>
void patch(std::vector<std::uint8_t>& file, std::uint64_t offset, T value) {
    REQUIRE(offset + sizeof value <= file.size());
    std::memcpy(file.data() + offset, &value, sizeof value);
}

inline LoadSegment seg(std::uint64_t gpa, std::uint64_t mem_size) { return LoadSegment{gpa, mem_size, {}}; }

} // namespace hv::test::boot_image
