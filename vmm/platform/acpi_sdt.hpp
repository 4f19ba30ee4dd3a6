#pragma once
// The header every ACPI system description table starts with (ACPI 6.5,
// 5.2.6), shared by the table writers (acpi_tables.cpp, acpi_madt.cpp).
#include "vmm/platform/firmware_blob.hpp"

#include <cstddef>
#include <cstdint>
#include <string_view>

namespace hv::acpi_sdt {

// Identification written into every header (and the RSDP's OEM ID). The
// OEM fields only have to be stable; Linux keys a few platform quirks on
// them, none of which match.
inline constexpr std::string_view kOemId = "HVVMM ";      // 6 bytes
inline constexpr std::string_view kOemTableId = "HVACPI  "; // 8 bytes
inline constexpr std::uint32_t kOemRevision = 1;
inline constexpr std::string_view kCreatorId = "HVMM"; // 4 bytes; no ASL compiler made these
inline constexpr std::uint32_t kCreatorRevision = 1;

inline constexpr std::size_t kSdtHeaderSize = 36;
inline constexpr std::size_t kSdtChecksum = 9;

// The header of a table of `length` bytes at `at`; its checksum is filled
// in by finish_table() once the body is written.
inline void write_header(FirmwareBlob& blob, std::size_t at, std::string_view signature, std::size_t length,
                         std::uint8_t revision) {
    blob.text(at, signature);
    blob.u32(at + 4, static_cast<std::uint32_t>(length));
    blob.u8(at + 8, revision);
    blob.text(at + 10, kOemId);
    blob.text(at + 16, kOemTableId);
    blob.u32(at + 24, kOemRevision);
    blob.text(at + 28, kCreatorId);
    blob.u32(at + 32, kCreatorRevision);
}

inline void finish_table(FirmwareBlob& blob, std::size_t at, std::size_t length) {
    blob.checksum(at, length, at + kSdtChecksum);
}

} // namespace hv::acpi_sdt
