// hv::parse_boot_image (and image_end of what it parses) over ELF images
// built in memory by elf_builder.hpp: valid ELF64 and multiboot images, then
// rejected ones. Every rejected image must produce a message naming the image
// and saying what was expected and what was found. check_image_fits is in
// test_boot_image_fits.cpp.
#include <doctest/doctest.h>

#include <cstdint>
#include <elf.h>
#include <string>
#include <vector>

#include "tests/support/boot_image_fixture.hpp"
#include "tests/support/elf_builder.hpp"
#include "tests/support/text_match.hpp"
#include "vmm/boot/boot_image.hpp"

using hv::BootImage;
using hv::ImageKind;
using hv::test::BuiltElf;
using hv::test::ElfSegment;
using hv::test::ElfSpec;
using hv::test::contains;
using namespace hv::test::boot_image;

// ---------------------------------------------------------------------------
// Valid images

TEST_CASE("parse_boot_image: static ELF64 with two PT_LOAD segments") {
    const BuiltElf elf = hv::test::build_elf(two_segment_elf64());
    const BootImage image = hv::parse_boot_image(elf.file, "guest.elf");

    CHECK(image.kind == ImageKind::Elf64);
    CHECK(image.entry == 0x100000);
    CHECK(image.multiboot_flags == 0);
    REQUIRE(image.segments.size() == 2);

    const auto& text = image.segments[0];
    CHECK(text.gpa == 0x100000);
    CHECK(text.mem_size == kText.size());
    CHECK(std::vector<std::uint8_t>(text.file_bytes.begin(), text.file_bytes.end()) == kText);
    // A view into the file, not a copy.
    CHECK(text.file_bytes.data() == elf.file.data() + elf.segment_offsets[0]);

    const auto& data = image.segments[1];
    CHECK(data.gpa == 0x200000);
    CHECK(data.mem_size == 0x1000); // file bytes + bss
    CHECK(data.file_bytes.size() == kData.size());
    CHECK(std::vector<std::uint8_t>(data.file_bytes.begin(), data.file_bytes.end()) == kData);

    CHECK(hv::image_end(image) == 0x201000);
}

TEST_CASE("parse_boot_image: non-PT_LOAD headers and empty PT_LOADs are skipped") {
    ElfSpec spec = two_segment_elf64();
    spec.segments.insert(spec.segments.begin(), ElfSegment{PT_NOTE, 0x300000, {1, 2, 3, 4}, std::nullopt});
    spec.segments.push_back(ElfSegment{PT_GNU_STACK, 0, {}, std::nullopt});
    spec.segments.push_back(ElfSegment{PT_LOAD, 0x400000, {}, 0}); // memsz 0: nothing to load
    const BuiltElf elf = hv::test::build_elf(spec);
    const BootImage image = hv::parse_boot_image(elf.file, "guest.elf");
    REQUIRE(image.segments.size() == 2);
    CHECK(image.segments[0].gpa == 0x100000);
    CHECK(image.segments[1].gpa == 0x200000);
}

TEST_CASE("parse_boot_image: a segment that is all bss has no file bytes") {
    ElfSpec spec = two_segment_elf64();
    spec.segments.push_back(ElfSegment{PT_LOAD, 0x300000, {}, 0x5000});
    const BootImage image = hv::parse_boot_image(hv::test::build_elf(spec).file, "guest.elf");
    REQUIRE(image.segments.size() == 3);
    CHECK(image.segments[2].gpa == 0x300000);
    CHECK(image.segments[2].mem_size == 0x5000);
    CHECK(image.segments[2].file_bytes.empty());
    CHECK(hv::image_end(image) == 0x305000);
}

TEST_CASE("parse_boot_image: ELF32 with a valid multiboot header is a multiboot image") {
    // Flags 0x3: bit 0 page-aligned modules, bit 1 memory information.
    const BuiltElf elf = hv::test::build_elf(multiboot_elf32(0x3));
    const BootImage image = hv::parse_boot_image(elf.file, "mb.elf");
    CHECK(image.kind == ImageKind::Multiboot);
    CHECK(image.multiboot_flags == 0x3);
    CHECK(image.entry == 0x100000);
    REQUIRE(image.segments.size() == 1);
    CHECK(image.segments[0].gpa == 0x100000);
    CHECK(image.segments[0].mem_size == 0x2000);
    CHECK(std::vector<std::uint8_t>(image.segments[0].file_bytes.begin(), image.segments[0].file_bytes.end()) ==
          kText);
}

TEST_CASE("parse_boot_image: multiboot flag bits 0-2 are accepted (bit 2, video mode, without video info)") {
    for (std::uint32_t flags : {0x0u, 0x1u, 0x2u, 0x4u, 0x7u}) {
        CAPTURE(flags);
        const BootImage image = hv::parse_boot_image(hv::test::build_elf(multiboot_elf32(flags)).file, "mb.elf");
        CHECK(image.kind == ImageKind::Multiboot);
        CHECK(image.multiboot_flags == flags);
    }
}

TEST_CASE("parse_boot_image: the multiboot header must lie entirely within the first 8 KiB, 4-byte aligned") {
    ElfSpec spec = multiboot_elf32(0x3);
    // 8180 + 12 = 8192: the last position where the whole header fits.
    spec.multiboot_offset = 8180;
    CHECK(parse_error(hv::test::build_elf(spec).file) == "");
    CHECK(hv::parse_boot_image(hv::test::build_elf(spec).file, "mb.elf").kind == ImageKind::Multiboot);

    spec.multiboot_offset = 8184; // header would end at 8196
    std::string msg = parse_error(hv::test::build_elf(spec).file);
    CHECK(contains(msg, "32-bit ELF without a multiboot header"));

    spec.multiboot_offset = 4098; // inside the window but not 4-byte aligned
    msg = parse_error(hv::test::build_elf(spec).file);
    CHECK(contains(msg, "32-bit ELF without a multiboot header"));
}

TEST_CASE("parse_boot_image: an ELF64 image carrying a multiboot header still boots as ELF64") {
    ElfSpec spec = two_segment_elf64();
    spec.multiboot = hv::test::multiboot_header(0x3);
    const BootImage image = hv::parse_boot_image(hv::test::build_elf(spec).file, "guest.elf");
    CHECK(image.kind == ImageKind::Elf64);
    CHECK(image.multiboot_flags == 0);
}

// ---------------------------------------------------------------------------
// Rejected images: the message names the image and what was wrong.

TEST_CASE("parse_boot_image: empty file") {
    const std::string msg = parse_error({}, "empty.bin");
    CHECK(contains(msg, "'empty.bin'"));
    CHECK(contains(msg, "empty"));
}

TEST_CASE("parse_boot_image: non-ELF file names the magic it found") {
    // A DOS/PE executable starts with "MZ" 0x90 0x00.
    std::vector<std::uint8_t> pe(256, 0);
    pe[0] = 'M';
    pe[1] = 'Z';
    pe[2] = 0x90;
    const std::string msg = parse_error(pe, "kernel.exe");
    CHECK(contains(msg, "'kernel.exe'"));
    CHECK(contains(msg, "not an ELF"));
    CHECK(contains(msg, "7f 45 4c 46")); // expected: 0x7f 'E' 'L' 'F'
    CHECK(contains(msg, "4d 5a 90 00")); // found
}

TEST_CASE("parse_boot_image: a file shorter than the ELF magic shows the bytes it has") {
    const std::string msg = parse_error({0x7f, 'E'});
    CHECK(contains(msg, "not an ELF"));
    CHECK(contains(msg, "found 7f 45 at offset 0)"));
}

TEST_CASE("parse_boot_image: truncated ELF header") {
    const BuiltElf elf = hv::test::build_elf(two_segment_elf64());
    const std::vector<std::uint8_t> cut(elf.file.begin(), elf.file.begin() + 40);
    const std::string msg = parse_error(cut);
    CHECK(contains(msg, "truncated"));
    CHECK(contains(msg, "40 bytes"));
    CHECK(contains(msg, std::to_string(sizeof(Elf64_Ehdr)))); // 64: what an ELF64 header needs
}

TEST_CASE("parse_boot_image: truncated program headers") {
    const BuiltElf elf = hv::test::build_elf(two_segment_elf64());
    // Cut in the middle of the second program header.
    const std::size_t cut_at = elf.phoff + sizeof(Elf64_Phdr) + 10;
    const std::vector<std::uint8_t> cut(elf.file.begin(), elf.file.begin() + cut_at);
    const std::string msg = parse_error(cut);
    CHECK(contains(msg, "program headers"));
    CHECK(contains(msg, "past the end of the file"));
    CHECK(contains(msg, std::to_string(cut_at) + " bytes"));
    CHECK(contains(msg, std::to_string(2 * sizeof(Elf64_Phdr)) + " bytes")); // 112 bytes of headers
}

TEST_CASE("parse_boot_image: e_phoff pointing far past the end of the file") {
    BuiltElf elf = hv::test::build_elf(two_segment_elf64());
    patch<std::uint64_t>(elf.file, offsetof(Elf64_Ehdr, e_phoff), UINT64_MAX - 8);
    CHECK(contains(parse_error(elf.file), "past the end of the file"));
}

TEST_CASE("parse_boot_image: wrong program header entry size") {
    BuiltElf elf = hv::test::build_elf(two_segment_elf64());
    patch<std::uint16_t>(elf.file, offsetof(Elf64_Ehdr, e_phentsize), 32);
    const std::string msg = parse_error(elf.file);
    CHECK(contains(msg, "program header size 32"));
    CHECK(contains(msg, "expected 56")); // sizeof(Elf64_Phdr)
}

TEST_CASE("parse_boot_image: no program headers at all") {
    ElfSpec spec = two_segment_elf64();
    spec.segments.clear();
    CHECK(contains(parse_error(hv::test::build_elf(spec).file), "no program headers"));
}

TEST_CASE("parse_boot_image: a segment's file range past EOF") {
    BuiltElf elf = hv::test::build_elf(two_segment_elf64());
    elf.file.resize(elf.file.size() - 1); // the data segment loses its last byte
    const std::string msg = parse_error(elf.file);
    CHECK(contains(msg, "truncated"));
    CHECK(contains(msg, "segment 1"));
    CHECK(contains(msg, std::to_string(elf.file.size()) + " bytes"));
}

TEST_CASE("parse_boot_image: a segment file offset that overflows") {
    BuiltElf elf = hv::test::build_elf(two_segment_elf64());
    patch<std::uint64_t>(elf.file, hv::test::phdr64_offset(elf, 0) + offsetof(Elf64_Phdr, p_offset), UINT64_MAX - 4);
    const std::string msg = parse_error(elf.file);
    CHECK(contains(msg, "truncated"));
    CHECK(contains(msg, "segment 0"));
}

TEST_CASE("parse_boot_image: p_filesz > p_memsz") {
    ElfSpec spec = two_segment_elf64();
    spec.segments[1].mem_size = 8; // 16 file bytes
    const std::string msg = parse_error(hv::test::build_elf(spec).file);
    CHECK(contains(msg, "segment 1"));
    CHECK(contains(msg, "(16)"));
    CHECK(contains(msg, "(8)"));
}

TEST_CASE("parse_boot_image: a segment wrapping around the address space") {
    ElfSpec spec = two_segment_elf64();
    spec.segments[1].paddr = UINT64_MAX - 0x100; // + 0x1000 bytes wraps
    CHECK(contains(parse_error(hv::test::build_elf(spec).file), "wraps"));
}

TEST_CASE("parse_boot_image: position-independent (ET_DYN) executables are rejected") {
    ElfSpec spec = two_segment_elf64();
    spec.type = ET_DYN;
    const std::string msg = parse_error(hv::test::build_elf(spec).file);
    CHECK(contains(msg, "ET_DYN"));
    CHECK(contains(msg, "-static"));
}

TEST_CASE("parse_boot_image: relocatable objects (ET_REL) are rejected") {
    ElfSpec spec = two_segment_elf64();
    spec.type = ET_REL;
    const std::string msg = parse_error(hv::test::build_elf(spec).file);
    CHECK(contains(msg, "ET_EXEC"));
    CHECK(contains(msg, "e_type 1")); // ET_REL == 1
}

TEST_CASE("parse_boot_image: wrong machine") {
    ElfSpec spec = two_segment_elf64();
    spec.machine = EM_AARCH64; // 183
    std::string msg = parse_error(hv::test::build_elf(spec).file);
    CHECK(contains(msg, "x86-64"));
    CHECK(contains(msg, "e_machine 183"));

    ElfSpec mb = multiboot_elf32(0x3);
    mb.machine = EM_X86_64; // 62: an ELF32 must be i386
    msg = parse_error(hv::test::build_elf(mb).file);
    CHECK(contains(msg, "i386"));
    CHECK(contains(msg, "e_machine 62"));
}

TEST_CASE("parse_boot_image: big-endian ELF") {
    BuiltElf elf = hv::test::build_elf(two_segment_elf64());
    elf.file[EI_DATA] = ELFDATA2MSB;
    CHECK(contains(parse_error(elf.file), "little-endian"));
}

TEST_CASE("parse_boot_image: unknown ELF class") {
    BuiltElf elf = hv::test::build_elf(two_segment_elf64());
    elf.file[EI_CLASS] = 7;
    const std::string msg = parse_error(elf.file);
    CHECK(contains(msg, "ELF class 7"));
}

TEST_CASE("parse_boot_image: no PT_LOAD segment") {
    ElfSpec spec = two_segment_elf64();
    for (auto& s : spec.segments) s.type = PT_NOTE;
    CHECK(contains(parse_error(hv::test::build_elf(spec).file), "no loadable (PT_LOAD) segment"));
}

TEST_CASE("parse_boot_image: ELF32 without a multiboot header is rejected") {
    ElfSpec spec = multiboot_elf32(0);
    spec.multiboot.reset();
    const std::string msg = parse_error(hv::test::build_elf(spec).file, "plain32.elf");
    CHECK(contains(msg, "'plain32.elf'"));
    CHECK(contains(msg, "32-bit ELF"));
    CHECK(contains(msg, "multiboot header"));
}

TEST_CASE("parse_boot_image: multiboot header with a bad checksum") {
    ElfSpec spec = multiboot_elf32(0x3);
    auto header = *spec.multiboot;
    header[2] += 1;
    spec.multiboot = header;
    const BuiltElf elf = hv::test::build_elf(spec);
    const std::string msg = parse_error(elf.file);
    CHECK(contains(msg, "bad checksum"));
    CHECK(contains(msg, "offset " + std::to_string(elf.multiboot_offset)));
}

TEST_CASE("parse_boot_image: multiboot header requiring unsupported features") {
    // Bit 3 and bit 15 are "must honour" bits this loader does not know.
    std::string msg = parse_error(hv::test::build_elf(multiboot_elf32(0x8 | 0x3)).file);
    CHECK(contains(msg, "unsupported"));
    CHECK(contains(msg, "0x8)"));
    msg = parse_error(hv::test::build_elf(multiboot_elf32(0x8000)).file);
    CHECK(contains(msg, "unsupported"));
    CHECK(contains(msg, "0x8000"));
}

TEST_CASE("parse_boot_image: a non-ELF file with a multiboot header (a.out kludge) is rejected") {
    std::vector<std::uint8_t> file(64, 0x90);
    const auto header = hv::test::multiboot_header(0x10003); // bit 16: a.out address fields
    std::memcpy(file.data() + 16, header.data(), sizeof header);
    const std::string msg = parse_error(file, "aout.bin");
    CHECK(contains(msg, "'aout.bin'"));
    CHECK(contains(msg, "ELF32"));
}
