#pragma once
// Parsing of the guest images `vmm run` accepts, without touching guest
// memory: static ELF64 (entered in 64-bit mode) and multiboot v1 ELF32
// (entered in 32-bit protected mode). Every structural problem is a VmmError
// that says what was expected and what was found.
#include <cstdint>
#include <span>
#include <string>
#include <vector>

namespace hv {

enum class ImageKind { Elf64, Multiboot };

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
};

inline constexpr std::uint32_t kMultibootHeaderMagic = 0x1BADB002;
inline constexpr std::uint32_t kMultibootBootMagic = 0x2BADB002;
inline constexpr std::size_t kMultibootSearchBytes = 8192;

// `file` must outlive the result (segments view into it). `name` is used in messages.
BootImage parse_boot_image(std::span<const std::uint8_t> file, const std::string& name);

// Checks the segments and entry against guest RAM of `ram_size` bytes with
// `cpus` stacks at its top: segments above the reserved region, below the
// stacks, not overlapping each other; entry inside a segment.
void check_image_fits(const BootImage& image, std::uint64_t ram_size, std::uint32_t cpus,
                      const std::string& name);

// Highest guest-physical address (exclusive) any segment occupies.
std::uint64_t image_end(const BootImage& image);

} // namespace hv
