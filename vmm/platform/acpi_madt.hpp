#pragma once
// The MADT (ACPI 6.5, 5.2.12) of build_acpi_tables: one local APIC entry
// per vCPU (APIC ID = processor UID = vCPU index; x2APIC entries from APIC
// ID 255 on), the IOAPIC, the ISA IRQ 0 -> GSI 2 and SCI overrides
// (pc_wiring.hpp), LINT1 NMI for all processors (and the x2APIC form when
// there are x2APIC processors).
#include "vmm/platform/acpi_tables.hpp"
#include "vmm/platform/firmware_blob.hpp"

#include <cstddef>
#include <cstdint>

namespace hv {

// Bytes the MADT takes for `cpus` vCPUs.
std::size_t madt_size(std::uint32_t cpus);
// Writes it, checksum included, at blob offset `at`; `size` is madt_size(platform.cpus).
void write_madt(FirmwareBlob& blob, const AcpiPlatform& platform, std::size_t at, std::size_t size);

} // namespace hv
