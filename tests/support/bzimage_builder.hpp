#pragma once
// Synthesises small bzImages in memory for the Linux loader tests, so each
// test states which setup-header field it changes. Layout of a built file:
//
//   [0, 512)                     boot sector: boot flag 0xAA55 at 0x1fe
//   [0x1f1, 0x202 + jump)        setup header (offsets from the x86 boot protocol)
//   [512, (setup_sects + 1)*512) rest of the setup code (zeros here)
//   then the protected-mode kernel: `kernel` bytes, syssize = size / 16
//
// Field offsets are written out here from the protocol document, not taken
// from the code under test.
#include <cstdint>
#include <cstring>
#include <vector>

namespace hv::test {

struct BzImageSpec {
    std::uint8_t setup_sects = 3;
    std::uint16_t version = 0x020f;        // 2.15
    std::uint8_t header_end_jump = 0x66;   // header ends at 0x202 + 0x66 = 0x268
    std::uint8_t loadflags = 0x01;         // LOADED_HIGH
    std::uint16_t xloadflags = 0x03;       // XLF_KERNEL_64 | XLF_CAN_BE_LOADED_ABOVE_4G
    std::uint64_t pref_address = 0x1000000;
    std::uint32_t kernel_alignment = 0x200000;
    std::uint8_t relocatable = 1;
    std::uint32_t init_size = 0x800000;    // 8 MiB
    std::uint32_t cmdline_size = 2047;
    std::uint32_t initrd_addr_max = 0x7fffffff;
    std::vector<std::uint8_t> kernel = std::vector<std::uint8_t>(4096, 0x90);
    bool bad_magic = false;
};

inline std::vector<std::uint8_t> build_bzimage(const BzImageSpec& s) {
    const std::size_t setup_bytes = (std::size_t{s.setup_sects ? s.setup_sects : 4u} + 1) * 512;
    std::vector<std::uint8_t> f(setup_bytes + s.kernel.size(), 0);
    auto put = [&](std::size_t off, auto v) { std::memcpy(f.data() + off, &v, sizeof v); };
    put(0x1f1, s.setup_sects);
    put(0x1f4, static_cast<std::uint32_t>(s.kernel.size() / 16));
    put(0x1fe, std::uint16_t{0xaa55});
    put(0x200, std::uint8_t{0xeb}); // jmp short over the header
    put(0x201, s.header_end_jump);
    put(0x202, s.bad_magic ? std::uint32_t{0x53726449} : std::uint32_t{0x53726448}); // "HdrS"
    put(0x206, s.version);
    put(0x211, s.loadflags);
    put(0x214, std::uint32_t{0x100000}); // code32_start
    put(0x22c, s.initrd_addr_max);
    put(0x230, s.kernel_alignment);
    put(0x234, s.relocatable);
    put(0x236, s.xloadflags);
    put(0x238, s.cmdline_size);
    put(0x258, s.pref_address);
    put(0x260, s.init_size);
    std::memcpy(f.data() + setup_bytes, s.kernel.data(), s.kernel.size());
    return f;
}

} // namespace hv::test
