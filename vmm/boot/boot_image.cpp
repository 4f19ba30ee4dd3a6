#include "vmm/boot/boot_image.hpp"

#include "vmm/boot/guest_layout.hpp"
#include "vmm/boot/image_file.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <algorithm>
#include <cstring>
#include <elf.h>
#include <optional>

namespace hv {
namespace {

[[noreturn]] void fail(const std::string& name, const std::string& what) { image_error(name, what); }

bool range_in_file(std::span<const std::uint8_t> file, std::uint64_t offset, std::uint64_t len) {
    return offset <= file.size() && len <= file.size() - offset;
}

// Shared by ELF32 and ELF64: the two differ only in the header structs.
template <class Ehdr, class Phdr>
BootImage parse_elf(std::span<const std::uint8_t> file, const std::string& name, ImageKind kind,
                    std::uint16_t machine, const char* machine_name) {
    if (file.size() < sizeof(Ehdr))
        fail(name, "truncated: " + std::to_string(file.size()) + " bytes, an ELF header needs " +
                       std::to_string(sizeof(Ehdr)));
    const auto eh = read_field<Ehdr>(file, 0);
    if (eh.e_ident[EI_DATA] != ELFDATA2LSB) fail(name, "not a little-endian ELF file");
    if (eh.e_machine != machine)
        fail(name, std::string("expected an ") + machine_name + " ELF, found e_machine " +
                       std::to_string(eh.e_machine));
    if (eh.e_type == ET_DYN)
        fail(name, "position-independent ELF (ET_DYN) is not supported; link a static executable (-static -no-pie)");
    if (eh.e_type != ET_EXEC)
        fail(name, "expected an executable ELF (ET_EXEC), found e_type " + std::to_string(eh.e_type));
    if (eh.e_phnum == 0) fail(name, "no program headers (nothing to load)");
    if (eh.e_phentsize != sizeof(Phdr))
        fail(name, "program header size " + std::to_string(eh.e_phentsize) + ", expected " +
                       std::to_string(sizeof(Phdr)));
    const std::uint64_t ph_bytes = std::uint64_t{eh.e_phnum} * sizeof(Phdr);
    if (!range_in_file(file, eh.e_phoff, ph_bytes))
        fail(name, "truncated: program headers at offset " + std::to_string(eh.e_phoff) + " (" +
                       std::to_string(ph_bytes) + " bytes) run past the end of the file (" +
                       std::to_string(file.size()) + " bytes)");

    BootImage image;
    image.kind = kind;
    image.entry = eh.e_entry;
    for (unsigned i = 0; i < eh.e_phnum; ++i) {
        const auto ph = read_field<Phdr>(file, eh.e_phoff + std::uint64_t{i} * sizeof(Phdr));
        if (ph.p_type != PT_LOAD) continue;
        if (ph.p_memsz == 0) continue;
        if (ph.p_filesz > ph.p_memsz)
            fail(name, "segment " + std::to_string(i) + " has more file bytes (" + std::to_string(ph.p_filesz) +
                           ") than memory bytes (" + std::to_string(ph.p_memsz) + ")");
        if (!range_in_file(file, ph.p_offset, ph.p_filesz))
            fail(name, "truncated: segment " + std::to_string(i) + " needs file bytes [" + hex(ph.p_offset) +
                           ", " + hex(ph.p_offset + ph.p_filesz) + ") but the file has " +
                           std::to_string(file.size()) + " bytes");
        if (ph.p_paddr + ph.p_memsz < ph.p_paddr)
            fail(name, "segment " + std::to_string(i) + " wraps around the address space");
        image.segments.push_back(LoadSegment{ph.p_paddr, ph.p_memsz, file.subspan(ph.p_offset, ph.p_filesz)});
    }
    if (image.segments.empty()) fail(name, "no loadable (PT_LOAD) segment");
    return image;
}

// The multiboot v1 header: 4-byte aligned in the first 8 KiB, with
// magic + flags + checksum == 0 (mod 2^32).
std::optional<std::uint32_t> find_multiboot_flags(std::span<const std::uint8_t> file, const std::string& name) {
    const std::size_t limit = std::min(file.size(), kMultibootSearchBytes);
    for (std::size_t off = 0; off + 12 <= limit; off += 4) {
        const auto magic = read_field<std::uint32_t>(file, off);
        if (magic != kMultibootHeaderMagic) continue;
        const auto flags = read_field<std::uint32_t>(file, off + 4);
        const auto checksum = read_field<std::uint32_t>(file, off + 8);
        if (static_cast<std::uint32_t>(magic + flags + checksum) != 0)
            fail(name, "multiboot header at offset " + std::to_string(off) + " has a bad checksum (" +
                           hex(checksum) + ")");
        return flags;
    }
    return std::nullopt;
}

} // namespace

const char* to_string(ImageKind kind) {
    switch (kind) {
    case ImageKind::Elf64: return "64-bit ELF";
    case ImageKind::Multiboot: return "multiboot ELF32";
    case ImageKind::Linux: return "Linux bzImage";
    }
    return "?";
}

const char* image_kind_id(ImageKind kind) {
    switch (kind) {
    case ImageKind::Elf64: return "elf64";
    case ImageKind::Multiboot: return "multiboot";
    case ImageKind::Linux: return "linux";
    }
    return "?";
}

BootImage parse_boot_image(std::span<const std::uint8_t> file, const std::string& name) {
    if (file.empty()) fail(name, "the file is empty");
    if (looks_like_bzimage(file)) {
        BootImage image;
        image.kind = ImageKind::Linux;
        image.linux_kernel = parse_bzimage(file, name);
        return image;
    }
    static constexpr std::uint8_t kElfMagic[4] = {0x7f, 'E', 'L', 'F'};
    const bool is_elf = file.size() >= 4 && std::memcmp(file.data(), kElfMagic, 4) == 0;
    const auto mb_flags = find_multiboot_flags(file, name);
    if (!is_elf) {
        if (mb_flags)
            fail(name, "multiboot images must be ELF32; the a.out address fields are not supported");
        char found[64];
        const std::size_t n = std::min<std::size_t>(file.size(), 4);
        int len = 0;
        for (std::size_t i = 0; i < n; ++i) len += std::snprintf(found + len, sizeof found - len, " %02x", file[i]);
        fail(name, std::string("not an ELF file or a bzImage (expected ELF magic 7f 45 4c 46 at offset 0 or "
                               "\"HdrS\" at 0x202, found") + found + " at offset 0)");
    }
    if (file.size() <= EI_CLASS) fail(name, "truncated ELF identification");
    const std::uint8_t elf_class = file[EI_CLASS];
    if (elf_class == ELFCLASS64)
        return parse_elf<Elf64_Ehdr, Elf64_Phdr>(file, name, ImageKind::Elf64, EM_X86_64, "x86-64");
    if (elf_class == ELFCLASS32) {
        if (!mb_flags) fail(name, "32-bit ELF without a multiboot header in its first 8 KiB");
        // Bits 0-15 are requirements a loader must refuse if it cannot meet
        // them: 0 = page-aligned modules, 1 = memory information (both
        // provided), 2 = video mode (accepted, no video information given).
        const std::uint32_t unknown = *mb_flags & 0xfff8u;
        if (unknown)
            fail(name, "multiboot header requires unsupported features (flags " + hex(unknown) + ")");
        auto image = parse_elf<Elf32_Ehdr, Elf32_Phdr>(file, name, ImageKind::Multiboot, EM_386, "i386");
        image.multiboot_flags = *mb_flags;
        return image;
    }
    fail(name, "unknown ELF class " + std::to_string(elf_class) + " (expected 1 or 2)");
}

void check_image_fits(const BootImage& image, std::uint64_t ram_size, std::uint32_t cpus, const std::string& name) {
    if (image.linux_kernel) {
        const LinuxKernel& k = *image.linux_kernel;
        if (ram_size > layout::kMaxLinuxRam)
            fail(name, "a Linux guest can have at most " + format_size(layout::kMaxLinuxRam) + " of RAM (got --mem " +
                           format_size(ram_size) + "): RAM is one block from address 0 and must end below the "
                           "IOAPIC (0xfec00000) and local APIC (0xfee00000)");
        if (cpus > layout::kMaxLinuxCpus)
            fail(name, "a Linux guest can have at most " + std::to_string(layout::kMaxLinuxCpus) + " vCPUs (got --cpus " +
                           std::to_string(cpus) + "): APIC IDs above 254 need x2APIC, which Linux enables only with "
                           "interrupt remapping or KVM's extended destination IDs, and this VMM offers neither");
        if (!linux_load_address(k, ram_size)) {
            fail(name, "the kernel needs " + format_size(k.init_size) + " (init_size) from its load address " +
                           hex(k.pref_address) + (k.relocatable ? " or a lower aligned one" : "") + ", more than guest RAM (" +
                           format_size(ram_size) + ") holds; raise --mem (at least " + format_size(linux_min_ram(k)) + ")");
        }
        return;
    }
    const std::uint64_t stacks = layout::stacks_base(ram_size, cpus);
    std::vector<LoadSegment> sorted = image.segments;
    std::sort(sorted.begin(), sorted.end(), [](auto& a, auto& b) { return a.gpa < b.gpa; });
    for (std::size_t i = 0; i < sorted.size(); ++i) {
        const auto& s = sorted[i];
        const std::uint64_t end = s.gpa + s.mem_size;
        const std::string range = "[" + hex(s.gpa) + ", " + hex(end) + ")";
        if (s.gpa < layout::kImageStart)
            fail(name, "segment " + range + " overlaps the VMM's reserved region [0, " + hex(layout::kImageStart) + ")");
        if (end > ram_size)
            fail(name, "segment " + range + " lies outside guest RAM (" + format_size(ram_size) + ", ends at " +
                           hex(ram_size) + "); raise --mem");
        if (end > stacks && s.gpa < layout::stacks_top(ram_size))
            fail(name, "segment " + range + " overlaps the vCPU stacks at [" + hex(stacks) + ", " +
                           hex(layout::stacks_top(ram_size)) +
                           ") (" + std::to_string(cpus) + " x " + format_size(HV_STACK_SIZE) + "); raise --mem");
        if (i + 1 < sorted.size() && sorted[i + 1].gpa < end)
            fail(name, "segments " + range + " and [" + hex(sorted[i + 1].gpa) + ", ...) overlap");
    }
    const bool entry_ok = std::any_of(sorted.begin(), sorted.end(), [&](const LoadSegment& s) {
        return image.entry >= s.gpa && image.entry - s.gpa < s.mem_size;
    });
    if (!entry_ok) fail(name, "entry point " + hex(image.entry) + " is outside every loaded segment");
}

std::uint64_t image_end(const BootImage& image) {
    std::uint64_t end = 0;
    for (const auto& s : image.segments) end = std::max(end, s.gpa + s.mem_size);
    return end;
}

} // namespace hv
