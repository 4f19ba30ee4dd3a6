#pragma once
// Reading back the blob hv::build_acpi_tables writes, the way an OS finds
// its tables (RSDP -> XSDT/RSDT -> FADT -> DSDT/FACS, XSDT -> MADT), for the
// ACPI tests (test_acpi_tables.cpp, test_acpi_madt.cpp). Offsets are from
// the ACPI 6.5 specification (5.2.5-5.2.12), not from the VMM's code.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/support/table_blob.hpp"
#include "vmm/platform/acpi_tables.hpp"

namespace hv::test::acpi {

inline constexpr std::uint64_t kBase = 0xe0000;

// A built blob (table_blob.hpp) and the ACPI table lookups on top.
struct Blob : hv::test::TableBlob {
    // The blob offset of the table at guest-physical gpa, after checking that
    // the whole table (by its length field) lies inside the blob.
    std::size_t table(std::uint64_t gpa) const {
        REQUIRE(gpa >= base);
        const std::size_t at = gpa - base;
        REQUIRE(at + 8 <= bytes.size());
        REQUIRE(at + u32(at + 4) <= bytes.size());
        return at;
    }
    std::uint32_t length(std::size_t at) const { return u32(at + 4); }
};

inline Blob build(std::uint32_t cpus, std::uint64_t base = kBase) {
    hv::AcpiPlatform platform;
    platform.cpus = cpus;
    return Blob{{hv::build_acpi_tables(platform, base), base}};
}

// RSDP (5.2.5.3): XSDT address at 24, RSDT address at 16.
inline std::size_t xsdt_of(const Blob& b) { return b.table(b.u64(24)); }
inline std::size_t rsdt_of(const Blob& b) { return b.table(b.u32(16)); }

// The XSDT's 64-bit entries, each resolved to a blob offset.
inline std::vector<std::size_t> xsdt_tables(const Blob& b) {
    const std::size_t xsdt = xsdt_of(b);
    std::vector<std::size_t> tables;
    for (std::size_t at = xsdt + 36; at < xsdt + b.length(xsdt); at += 8) tables.push_back(b.table(b.u64(at)));
    return tables;
}

inline std::size_t find_table(const Blob& b, const std::string& signature) {
    for (std::size_t at : xsdt_tables(b))
        if (b.text(at, 4) == signature) return at;
    FAIL("no " << signature << " in the XSDT");
    return 0;
}

// FADT (5.2.9): X_DSDT at 140, X_FIRMWARE_CTRL at 132.
inline std::size_t dsdt_of(const Blob& b) { return b.table(b.u64(find_table(b, "FACP") + 140)); }
inline std::size_t facs_of(const Blob& b) { return b.table(b.u64(find_table(b, "FACP") + 132)); }

// A Generic Address Structure (5.2.3.2) in the FADT.
struct Gas {
    std::uint8_t space, bit_width, bit_offset, access_size;
    std::uint64_t address;
};
inline Gas gas(const Blob& b, std::size_t at) {
    return Gas{b.u8(at), b.u8(at + 1), b.u8(at + 2), b.u8(at + 3), b.u64(at + 4)};
}

// MADT (5.2.12) interrupt controller structures: type, length, then fields.
struct MadtEntry {
    std::uint8_t type;
    std::size_t at; // blob offset of the entry
};
inline std::vector<MadtEntry> madt_entries(const Blob& b) {
    const std::size_t madt = find_table(b, "APIC");
    std::vector<MadtEntry> entries;
    std::size_t at = madt + 44;
    while (at < madt + b.length(madt)) {
        const std::uint8_t length = b.u8(at + 1);
        REQUIRE(length >= 2);
        entries.push_back({b.u8(at), at});
        at += length;
    }
    CHECK(at == madt + b.length(madt)); // the last entry ends where the table does
    return entries;
}

struct Cpu {
    std::uint32_t apic_id, uid, flags;
    std::uint8_t type;
};
inline std::vector<Cpu> madt_cpus(const Blob& b) {
    std::vector<Cpu> cpus;
    for (const MadtEntry& e : madt_entries(b)) {
        if (e.type == 0) { // Processor Local APIC: UID at 2, APIC ID at 3, flags at 4
            CHECK(b.u8(e.at + 1) == 8);
            cpus.push_back({b.u8(e.at + 3), b.u8(e.at + 2), b.u32(e.at + 4), e.type});
        } else if (e.type == 9) { // Processor Local x2APIC: ID at 4, flags at 8, UID at 12
            CHECK(b.u8(e.at + 1) == 16);
            cpus.push_back({b.u32(e.at + 4), b.u32(e.at + 12), b.u32(e.at + 8), e.type});
        }
    }
    return cpus;
}

inline std::vector<MadtEntry> entries_of_type(const Blob& b, std::uint8_t type) {
    std::vector<MadtEntry> found;
    for (const MadtEntry& e : madt_entries(b))
        if (e.type == type) found.push_back(e);
    return found;
}

} // namespace hv::test::acpi
