#include "vmm/boot/bzimage.hpp"

#include "vmm/boot/image_file.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <algorithm>

namespace hv {
namespace {

using namespace bzimage;

[[noreturn]] void fail(const std::string& name, const std::string& what) { image_error(name, what); }


std::string version_text(std::uint16_t v) {
    return std::to_string(v >> 8) + "." + std::to_string(v & 0xff);
}

std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) / a * a; }

} // namespace

bool looks_like_bzimage(std::span<const std::uint8_t> file) {
    return file.size() >= kHeader + 4 && read_field<std::uint16_t>(file, kBootFlag) == kBootFlagValue &&
           read_field<std::uint32_t>(file, kHeader) == kHeaderMagic;
}

LinuxKernel parse_bzimage(std::span<const std::uint8_t> file, const std::string& name) {
    if (!looks_like_bzimage(file))
        fail(name, "not a bzImage (expected boot flag 0xaa55 at 0x1fe and \"HdrS\" at 0x202)");
    LinuxKernel k;
    k.protocol = read_field<std::uint16_t>(file, kVersion);
    if (k.protocol < kMinVersion)
        fail(name, "Linux boot protocol " + version_text(k.protocol) + " is too old: at least " +
                       version_text(kMinVersion) + " is needed for the 64-bit entry (kernels since 3.8)");
    // The header runs to 0x202 + the jump's displacement byte; every field
    // this loader reads lies below kHeaderMinEnd, which 2.12 kernels all reach.
    const std::size_t header_end = kHeader + file[kJump + 1];
    if (header_end < kHeaderMinEnd)
        fail(name, "setup header ends at " + hex(header_end) + ", before the fields of protocol " +
                       version_text(k.protocol) + " (expected at least " + hex(kHeaderMinEnd) + ")");
    if (file.size() < header_end)
        fail(name, "truncated: the setup header runs to " + hex(header_end) + " but the file has " +
                       std::to_string(file.size()) + " bytes");
    k.setup_header.assign(file.begin() + kSetupSects, file.begin() + header_end);

    const std::uint8_t loadflags = file[kLoadflags];
    if (!(loadflags & kLoadedHigh))
        fail(name, "a zImage (loadflags " + hex(loadflags) + " without LOADED_HIGH): only bzImages are supported");
    const std::uint16_t xloadflags = read_field<std::uint16_t>(file, kXloadflags);
    if (!(xloadflags & kXlfKernel64))
        fail(name, "the kernel has no 64-bit entry point (xloadflags " + hex(xloadflags) +
                       " without XLF_KERNEL_64): build it for x86-64");

    std::uint32_t setup_sects = file[kSetupSects];
    if (setup_sects == 0) setup_sects = 4; // the protocol's historical default
    const std::uint64_t kernel_offset = (std::uint64_t{setup_sects} + 1) * 512;
    const std::uint64_t kernel_size = std::uint64_t{read_field<std::uint32_t>(file, kSyssize)} * 16;
    if (kernel_size == 0) fail(name, "the setup header says the protected-mode kernel is empty (syssize 0)");
    if (kernel_offset > file.size() || kernel_size > file.size() - kernel_offset)
        fail(name, "truncated: the protected-mode kernel should occupy bytes [" + hex(kernel_offset) + ", " +
                       hex(kernel_offset + kernel_size) + ") (setup_sects " + std::to_string(setup_sects) +
                       ", syssize " + std::to_string(kernel_size / 16) + ") but the file has " +
                       std::to_string(file.size()) + " bytes");
    // Bytes after syssize (a signature appended by some tools) belong to no one: load what the header names.
    k.kernel = file.subspan(kernel_offset, kernel_size);

    k.pref_address = read_field<std::uint64_t>(file, kPrefAddress);
    k.kernel_alignment = read_field<std::uint32_t>(file, kKernelAlignment);
    k.relocatable = file[kRelocatableKernel] != 0;
    k.init_size = read_field<std::uint32_t>(file, kInitSize);
    k.cmdline_size = read_field<std::uint32_t>(file, kCmdlineSize);
    k.initrd_addr_max = read_field<std::uint32_t>(file, kInitrdAddrMax);
    if (k.relocatable && (k.kernel_alignment == 0 || (k.kernel_alignment & (k.kernel_alignment - 1))))
        fail(name, "kernel_alignment " + hex(k.kernel_alignment) + " is not a power of two");
    if (k.init_size < kernel_size)
        fail(name, "init_size " + hex(k.init_size) + " is smaller than the kernel it must hold (" +
                       hex(kernel_size) + " bytes)");
    if (k.pref_address < 0x100000 || k.pref_address % 4096)
        fail(name, "pref_address " + hex(k.pref_address) + " is not a page-aligned address from 1 MiB up");
    return k;
}

// A relocatable kernel may also go to the lowest aligned address from 1 MiB up.
std::uint64_t lowest_load_address(const LinuxKernel& kernel) {
    if (!kernel.relocatable) return kernel.pref_address;
    return std::min<std::uint64_t>(align_up(0x100000, kernel.kernel_alignment), kernel.pref_address);
}

std::optional<std::uint64_t> linux_load_address(const LinuxKernel& kernel, std::uint64_t ram_size) {
    auto fits = [&](std::uint64_t at) { return at <= ram_size && kernel.init_size <= ram_size - at; };
    if (fits(kernel.pref_address)) return kernel.pref_address;
    const std::uint64_t low = lowest_load_address(kernel);
    if (fits(low)) return low;
    return std::nullopt;
}

std::uint64_t linux_min_ram(const LinuxKernel& kernel) { return lowest_load_address(kernel) + kernel.init_size; }

} // namespace hv
