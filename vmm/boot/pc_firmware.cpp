#include "vmm/boot/pc_firmware.hpp"

#include "vmm/boot/boot_writes.hpp"
#include "vmm/boot/guest_layout.hpp"
#include "vmm/platform/acpi_tables.hpp"
#include "vmm/platform/mp_table.hpp"

namespace hv {

static_assert(layout::kMaxCpus <= kAcpiMaxCpus && layout::kMaxCpus <= kMpMaxCpus,
              "the firmware tables must hold every vCPU a VM may have");

void write_pc_firmware(GuestMemory& mem, std::uint32_t cpus) {
    must_write_obj(mem, layout::kBdaEbdaSegment, static_cast<std::uint16_t>(layout::kEbda >> 4), "BDA EBDA segment");
    must_write_obj(mem, layout::kBdaBaseMemoryKib, static_cast<std::uint16_t>(layout::kLowMemoryEnd / 1024),
                   "BDA base memory size");
    std::uint8_t ebda[layout::kEbdaSize] = {};
    ebda[0] = static_cast<std::uint8_t>(layout::kEbdaSize / 1024);
    must_write_obj(mem, layout::kEbda, ebda, "EBDA");

    AcpiPlatform acpi;
    acpi.cpus = cpus;
    must_write(mem, layout::kAcpiTables, build_acpi_tables(acpi, layout::kAcpiTables), "ACPI tables");

    must_write(mem, layout::kMpTable, build_mp_table(acpi, layout::kMpTable), "MP table");
}

} // namespace hv
