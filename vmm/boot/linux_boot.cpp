#include "vmm/boot/linux_boot.hpp"

#include "vmm/boot/boot_writes.hpp"
#include "vmm/boot/guest_layout.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <algorithm>
#include <array>
#include <cstring>

namespace hv {
namespace {

// Boot protocol: a boot loader without an assigned ID says 0xff.
constexpr std::uint8_t kLoaderUndefined = 0xff;

template <class T>
void put(std::array<std::uint8_t, boot_params::kSize>& zp, std::size_t offset, T value) {
    std::memcpy(zp.data() + offset, &value, sizeof value);
}

// The initramfs goes as high as the kernel allows (initrd_addr_max) and RAM
// reaches, page-aligned, above everything the kernel may use while it
// decompresses; the kernel itself reserves it until it has unpacked it.
std::uint64_t place_initrd(const LinuxKernel& k, std::uint64_t kernel_end, std::uint64_t ram_size,
                           const BootModule& initrd) {
    const std::uint64_t top = std::min<std::uint64_t>(ram_size, std::uint64_t{k.initrd_addr_max} + 1);
    const std::uint64_t size = initrd.bytes.size();
    if (size > top || ((top - size) & ~(layout::kPageSize - 1)) < kernel_end)
        throw VmmError("initramfs '" + initrd.name + "' (" + format_size(size) +
                       ") does not fit in guest RAM between the kernel's decompression area (ends at " +
                       hex(kernel_end) + ") and " + hex(top) + " (the end of RAM or the kernel's initrd_addr_max); "
                       "raise --mem (needs at least " + format_size(align_up(kernel_end, layout::kPageSize) + size) + ")");
    return (top - size) & ~(layout::kPageSize - 1);
}

} // namespace

std::vector<E820Entry> linux_e820_map(std::uint64_t ram_size) {
    return {
        {0, layout::kLowMemoryEnd, kE820Ram},
        {layout::kLowMemoryEnd, layout::kImageStart - layout::kLowMemoryEnd, kE820Reserved},
        {layout::kImageStart, ram_size - layout::kImageStart, kE820Ram},
    };
}

BootInfo load_linux(GuestMemory& mem, const BootImage& image, const BootConfig& config, const std::string& name) {
    const LinuxKernel& k = *image.linux_kernel;
    const auto load = linux_load_address(k, config.ram_size);
    if (!load) throw VmmError("internal: '" + name + "' does not fit in RAM after checks");
    if (config.modules.size() > 1)
        throw VmmError("a Linux kernel takes one initramfs; got " + std::to_string(config.modules.size()));
    must_write(mem, *load, k.kernel, "kernel");
    write_linux_gdt(mem);
    write_identity_page_tables(mem);

    std::array<std::uint8_t, boot_params::kSize> zp{};
    std::memcpy(zp.data() + bzimage::kSetupSects, k.setup_header.data(), k.setup_header.size());
    put<std::uint8_t>(zp, bzimage::kTypeOfLoader, kLoaderUndefined);

    // The kernel copies at most cmdline_size bytes; refuse what it would cut.
    const std::string cmdline = config.cmdline.empty() ? kDefaultLinuxCmdline : config.cmdline;
    const std::uint64_t cmdline_max = std::min<std::uint64_t>(layout::kCmdlineMax, std::uint64_t{k.cmdline_size} + 1);
    write_string(mem, layout::kCmdline, cmdline, cmdline_max, "the kernel command line");
    put<std::uint32_t>(zp, bzimage::kCmdLinePtr, static_cast<std::uint32_t>(layout::kCmdline));
    put<std::uint32_t>(zp, boot_params::kExtCmdLinePtr, 0);

    if (!config.modules.empty()) {
        const BootModule& initrd = config.modules.front();
        const std::uint64_t at = place_initrd(k, *load + k.init_size, config.ram_size, initrd);
        must_write(mem, at, initrd.bytes, "initramfs");
        const std::uint64_t size = initrd.bytes.size();
        put<std::uint32_t>(zp, bzimage::kRamdiskImage, static_cast<std::uint32_t>(at));
        put<std::uint32_t>(zp, bzimage::kRamdiskSize, static_cast<std::uint32_t>(size));
        put<std::uint32_t>(zp, boot_params::kExtRamdiskImage, static_cast<std::uint32_t>(at >> 32));
        put<std::uint32_t>(zp, boot_params::kExtRamdiskSize, static_cast<std::uint32_t>(size >> 32));
    }

    const auto e820 = linux_e820_map(config.ram_size);
    put<std::uint8_t>(zp, boot_params::kE820Entries, static_cast<std::uint8_t>(e820.size()));
    std::memcpy(zp.data() + boot_params::kE820Table, e820.data(), e820.size() * sizeof(E820Entry));

    // write_pc_firmware (load_guest) put the ACPI tables there, the RSDP first.
    put<std::uint64_t>(zp, boot_params::kAcpiRsdpAddr, layout::kAcpiTables);

    must_write(mem, layout::kBootParams, zp, "boot_params");
    BootInfo info;
    info.kind = ImageKind::Linux;
    info.entry = *load + bzimage::kEntry64Offset;
    info.cmdline_gpa = layout::kCmdline;
    info.cmdline = cmdline;
    info.boot_params = layout::kBootParams;
    return info;
}

} // namespace hv
