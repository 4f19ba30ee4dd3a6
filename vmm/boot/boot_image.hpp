#pragma once
// Parsing of the guest images `vmm run` accepts, without touching guest
// memory: static ELF64 (entered in 64-bit mode), multiboot v1 ELF32
// (entered in 32-bit protected mode) and Linux bzImages (64-bit boot
// protocol, see bzimage.hpp). The kind is detected from the file's contents. Every structural problem is a VmmError
// that says what was expected and what was found.
#include "vmm/boot/bzimage.hpp"

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace hv {

enum class ImageKind { Elf64, Multiboot, Linux };
const char* to_string(ImageKind kind);     // for people: "64-bit ELF", "multiboot ELF32", "Linux bzImage"
const char* image_kind_id(ImageKind kind); // for scripts (--json): "elf64", "multiboot", "linux"

struct LoadSegment {
    std::uint64_t gpa = 0;                  // where the segment starts in guest RAM
    std::uint64_t mem_size = 0;             // bytes in memory (file bytes + zeroed tail)
    std::span<const std::uint8_t> file_bytes; // view into the image file
};

struct BootImage {
    ImageKind kind = ImageKind::Elf64;
    std::uint64_t entry = 0;
    std::vector<LoadSegment> segments;
    std::uint32_t multiboot_flags = 0; // header flags, multiboot only
    // Linux only. Its segments stay empty: where the kernel goes depends on
    // the RAM size (linux_load_address), so load_linux() places it.
    std::optional<LinuxKernel> linux_kernel;
};

inline constexpr std::uint32_t kMultibootHeaderMagic = 0x1BADB002;
inline constexpr std::uint32_t kMultibootBootMagic = 0x2BADB002;
inline constexpr std::size_t kMultibootSearchBytes = 8192;

// `file` must outlive the result (segments view into it). `name` is used in messages.
BootImage parse_boot_image(std::span<const std::uint8_t> file, const std::string& name);

// Checks the segments and entry against guest RAM of `ram_size` bytes with
// `cpus` stacks at its top: segments above the reserved region, below the
// stacks, not overlapping each other; entry inside a segment. For a Linux
// kernel: that RAM can hold it (init_size from its load address) and stays
// below the local APIC and IOAPIC (layout::kMaxLinuxRam), and that its CPUs
// have xAPIC IDs (layout::kMaxLinuxCpus).
void check_image_fits(const BootImage& image, std::uint64_t ram_size, std::uint32_t cpus,
                      const std::string& name);

// Highest guest-physical address (exclusive) any segment occupies.
std::uint64_t image_end(const BootImage& image);

} // namespace hv
