#pragma once
// Synthesises small ELF images in memory for the loader tests, so each test
// states exactly which header field it breaks. Layout of a built file:
//
//   [0, ehdr)                    ELF header (Elf64_Ehdr or Elf32_Ehdr)
//   [phoff, phoff + n*phentsize) program headers, one per ElfSegment
//   [multiboot_offset, +12)      optional multiboot v1 header (magic, flags, checksum)
//   ...                          each segment's file bytes, 16-byte aligned
//
// The structs come from glibc's <elf.h> (the System V gABI layout), not
// from the code under test.
#include <elf.h>

#include <algorithm>
#include <array>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

namespace hv::test {

struct ElfSegment {
    std::uint32_t type = PT_LOAD;
    std::uint64_t paddr = 0;
    std::vector<std::uint8_t> bytes;       // the segment's file contents
    std::optional<std::uint64_t> mem_size; // default: bytes.size()
};

struct ElfSpec {
    bool elf32 = false;
    std::uint16_t type = ET_EXEC;
    std::optional<std::uint16_t> machine; // default: EM_X86_64 / EM_386 by class
    std::uint64_t entry = 0;
    std::vector<ElfSegment> segments;
    // Three little-endian dwords written at multiboot_offset (default: right
    // after the program headers, rounded up to 4).
    std::optional<std::array<std::uint32_t, 3>> multiboot;
    std::optional<std::uint64_t> multiboot_offset;
};

struct BuiltElf {
    std::vector<std::uint8_t> file;
    std::uint64_t phoff = 0;
    std::vector<std::uint64_t> segment_offsets; // file offset of each segment's bytes
    std::uint64_t multiboot_offset = 0;
};

// A multiboot v1 header whose checksum makes magic + flags + checksum == 0 (mod 2^32).
inline std::array<std::uint32_t, 3> multiboot_header(std::uint32_t flags) {
    constexpr std::uint32_t magic = 0x1BADB002; // Multiboot Specification 0.6.96, section 3.1.1
    return {magic, flags, static_cast<std::uint32_t>(0u - magic - flags)};
}

inline std::uint64_t align_up16(std::uint64_t v) { return (v + 15) & ~std::uint64_t{15}; }

template <class T>
void put(std::vector<std::uint8_t>& file, std::uint64_t offset, const T& value) {
    if (file.size() < offset + sizeof value) file.resize(offset + sizeof value);
    std::memcpy(file.data() + offset, &value, sizeof value);
}

inline BuiltElf build_elf(const ElfSpec& spec) {
    BuiltElf out;
    const std::uint64_t ehsize = spec.elf32 ? sizeof(Elf32_Ehdr) : sizeof(Elf64_Ehdr);
    const std::uint64_t phentsize = spec.elf32 ? sizeof(Elf32_Phdr) : sizeof(Elf64_Phdr);
    out.phoff = ehsize;
    std::uint64_t cursor = out.phoff + phentsize * spec.segments.size();
    if (spec.multiboot) {
        out.multiboot_offset = spec.multiboot_offset.value_or((cursor + 3) & ~std::uint64_t{3});
        cursor = std::max(cursor, out.multiboot_offset + 12);
    }
    for (const auto& s : spec.segments) {
        cursor = align_up16(cursor);
        out.segment_offsets.push_back(cursor);
        cursor += s.bytes.size();
    }
    out.file.assign(cursor, 0);

    const std::uint16_t machine = spec.machine.value_or(spec.elf32 ? EM_386 : EM_X86_64);
    auto fill_ident = [&](unsigned char* ident) {
        ident[EI_MAG0] = ELFMAG0;
        ident[EI_MAG1] = ELFMAG1;
        ident[EI_MAG2] = ELFMAG2;
        ident[EI_MAG3] = ELFMAG3;
        ident[EI_CLASS] = spec.elf32 ? ELFCLASS32 : ELFCLASS64;
        ident[EI_DATA] = ELFDATA2LSB;
        ident[EI_VERSION] = EV_CURRENT;
    };
    if (spec.elf32) {
        Elf32_Ehdr eh{};
        fill_ident(eh.e_ident);
        eh.e_type = spec.type;
        eh.e_machine = machine;
        eh.e_version = EV_CURRENT;
        eh.e_entry = static_cast<Elf32_Addr>(spec.entry);
        eh.e_phoff = static_cast<Elf32_Off>(out.phoff);
        eh.e_ehsize = sizeof(Elf32_Ehdr);
        eh.e_phentsize = sizeof(Elf32_Phdr);
        eh.e_phnum = static_cast<Elf32_Half>(spec.segments.size());
        put(out.file, 0, eh);
        for (std::size_t i = 0; i < spec.segments.size(); ++i) {
            const auto& s = spec.segments[i];
            Elf32_Phdr ph{};
            ph.p_type = s.type;
            ph.p_offset = static_cast<Elf32_Off>(out.segment_offsets[i]);
            ph.p_vaddr = ph.p_paddr = static_cast<Elf32_Addr>(s.paddr);
            ph.p_filesz = static_cast<Elf32_Word>(s.bytes.size());
            ph.p_memsz = static_cast<Elf32_Word>(s.mem_size.value_or(s.bytes.size()));
            ph.p_flags = PF_R | PF_W | PF_X;
            ph.p_align = 0x1000;
            put(out.file, out.phoff + i * sizeof ph, ph);
        }
    } else {
        Elf64_Ehdr eh{};
        fill_ident(eh.e_ident);
        eh.e_type = spec.type;
        eh.e_machine = machine;
        eh.e_version = EV_CURRENT;
        eh.e_entry = spec.entry;
        eh.e_phoff = out.phoff;
        eh.e_ehsize = sizeof(Elf64_Ehdr);
        eh.e_phentsize = sizeof(Elf64_Phdr);
        eh.e_phnum = static_cast<Elf64_Half>(spec.segments.size());
        put(out.file, 0, eh);
        for (std::size_t i = 0; i < spec.segments.size(); ++i) {
            const auto& s = spec.segments[i];
            Elf64_Phdr ph{};
            ph.p_type = s.type;
            ph.p_offset = out.segment_offsets[i];
            ph.p_vaddr = ph.p_paddr = s.paddr;
            ph.p_filesz = s.bytes.size();
            ph.p_memsz = s.mem_size.value_or(s.bytes.size());
            ph.p_flags = PF_R | PF_W | PF_X;
            ph.p_align = 0x1000;
            put(out.file, out.phoff + i * sizeof ph, ph);
        }
    }
    if (spec.multiboot) {
        for (int i = 0; i < 3; ++i) put(out.file, out.multiboot_offset + 4 * i, (*spec.multiboot)[i]);
    }
    for (std::size_t i = 0; i < spec.segments.size(); ++i) {
        const auto& b = spec.segments[i].bytes;
        if (!b.empty()) std::memcpy(out.file.data() + out.segment_offsets[i], b.data(), b.size());
    }
    return out;
}

// Byte offsets of program-header fields, for tests that corrupt one field
// of an already built image (System V gABI, "Program Header").
inline std::uint64_t phdr64_offset(const BuiltElf& elf, unsigned index) {
    return elf.phoff + index * sizeof(Elf64_Phdr);
}

} // namespace hv::test
