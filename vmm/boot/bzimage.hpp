#pragma once
// The Linux x86 boot protocol's setup header, as a boot loader reads it from
// a bzImage: the fields this VMM needs for a 64-bit entry, plus the raw
// header bytes that boot_params must carry. Parsing touches no guest memory;
// every problem is a VmmError saying what was expected and what was found.
#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <vector>

namespace hv {

// Offsets in the bzImage file (and in struct boot_params, which embeds the
// same header at the same offset).
namespace bzimage {
inline constexpr std::size_t kSetupSects = 0x1f1;  // u8: 512-byte setup sectors after the boot sector (0 means 4)
inline constexpr std::size_t kSyssize = 0x1f4;     // u32: protected-mode code size in 16-byte units
inline constexpr std::size_t kBootFlag = 0x1fe;    // u16: 0xAA55
inline constexpr std::size_t kJump = 0x200;        // 2-byte jump; its second byte + 0x202 ends the header
inline constexpr std::size_t kHeader = 0x202;      // u32: "HdrS"
inline constexpr std::size_t kVersion = 0x206;     // u16: protocol version, major << 8 | minor
inline constexpr std::size_t kTypeOfLoader = 0x210;
inline constexpr std::size_t kLoadflags = 0x211;
inline constexpr std::size_t kRamdiskImage = 0x218;
inline constexpr std::size_t kRamdiskSize = 0x21c;
inline constexpr std::size_t kHeapEndPtr = 0x224;
inline constexpr std::size_t kCmdLinePtr = 0x228;
inline constexpr std::size_t kInitrdAddrMax = 0x22c;
inline constexpr std::size_t kKernelAlignment = 0x230;
inline constexpr std::size_t kRelocatableKernel = 0x234;
inline constexpr std::size_t kXloadflags = 0x236;
inline constexpr std::size_t kCmdlineSize = 0x238;
inline constexpr std::size_t kPrefAddress = 0x258;
inline constexpr std::size_t kInitSize = 0x260;
inline constexpr std::size_t kHeaderMinEnd = 0x264; // through init_size: every field above

inline constexpr std::uint16_t kBootFlagValue = 0xaa55;
inline constexpr std::uint32_t kHeaderMagic = 0x53726448; // "HdrS" little-endian
// 2.12 added xloadflags, which is where a kernel says it has a 64-bit entry.
inline constexpr std::uint16_t kMinVersion = 0x020c;
inline constexpr std::uint8_t kLoadedHigh = 0x01;     // loadflags: protected-mode code at 1 MiB or above
inline constexpr std::uint16_t kXlfKernel64 = 0x01;   // xloadflags: 64-bit entry at load address + 0x200
inline constexpr std::uint64_t kEntry64Offset = 0x200;
} // namespace bzimage

struct LinuxKernel {
    std::uint16_t protocol = 0;          // e.g. 0x020f for 2.15
    std::vector<std::uint8_t> setup_header; // file bytes [0x1f1, end of header), copied into boot_params
    std::span<const std::uint8_t> kernel;   // the protected-mode kernel (a view into the file)
    std::uint64_t pref_address = 0;
    std::uint32_t kernel_alignment = 0;
    bool relocatable = false;
    std::uint32_t init_size = 0;        // bytes the kernel needs from its load address while it decompresses
    std::uint32_t cmdline_size = 0;     // longest command line, without the NUL
    std::uint32_t initrd_addr_max = 0;  // highest address the initramfs may occupy
};

// True when `file` carries the boot sector signature and "HdrS" of a bzImage.
bool looks_like_bzimage(std::span<const std::uint8_t> file);

// `file` must outlive the result (kernel views into it). `name` is used in messages.
LinuxKernel parse_bzimage(std::span<const std::uint8_t> file, const std::string& name);

// Where the kernel goes in guest RAM of `ram_size` bytes: pref_address when
// [pref_address, + init_size) fits, else the lowest kernel_alignment-aligned
// address from 1 MiB up for a relocatable kernel. nullopt when nothing fits.
std::optional<std::uint64_t> linux_load_address(const LinuxKernel& kernel, std::uint64_t ram_size);

// The least RAM linux_load_address() finds room in.
std::uint64_t linux_min_ram(const LinuxKernel& kernel);

} // namespace hv
