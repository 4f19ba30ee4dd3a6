#include "vmm/platform/acpi_tables.hpp"

#include "vmm/kvm/pc_wiring.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/platform/acpi_madt.hpp"
#include "vmm/platform/acpi_sdt.hpp"
#include "vmm/platform/firmware_blob.hpp"

#include <cstddef>
#include <string>
#include <string_view>

// Field offsets and values below are from the ACPI 6.5 specification,
// chapter 5.2 (RSDP 5.2.5, table header 5.2.6, RSDT 5.2.7, XSDT 5.2.8,
// FADT 5.2.9, FACS 5.2.10, DSDT 5.2.11.1; the MADT is acpi_madt.cpp's) and
// chapter 20 (AML).

namespace hv {
namespace {

using namespace acpi_sdt;

// Root System Description Pointer (revision 2: the ACPI 2.0+ form with the XSDT).
constexpr std::size_t kRsdpSize = 36;
constexpr std::size_t kRsdpV1Size = 20; // what the first checksum covers
constexpr std::uint8_t kRsdpRevision = 2;
constexpr std::size_t kRsdpAlignment = 16; // Linux's BIOS-area scan only looks at 16-byte boundaries

constexpr std::size_t kTableAlignment = 8;

constexpr std::uint8_t kRsdtRevision = 1;
constexpr std::uint8_t kXsdtRevision = 1;
constexpr std::size_t kRootEntries = 2; // FADT, MADT: the DSDT and FACS hang off the FADT

// FADT, revision 6.5: the full fixed-hardware model (not hardware-reduced),
// 276 bytes including the 64-bit X_ fields.
constexpr std::size_t kFadtSize = 276;
constexpr std::uint8_t kFadtRevision = 6;
constexpr std::uint8_t kFadtMinorRevision = 5;
namespace fadt {
constexpr std::size_t kFirmwareCtrl = 36;
constexpr std::size_t kDsdt = 40;
constexpr std::size_t kSciInt = 46;
constexpr std::size_t kSmiCmd = 48;
constexpr std::size_t kPm1aEvtBlk = 56;
constexpr std::size_t kPm1aCntBlk = 64;
constexpr std::size_t kPmTmrBlk = 76;
constexpr std::size_t kPm1EvtLen = 88;
constexpr std::size_t kPm1CntLen = 89;
constexpr std::size_t kPmTmrLen = 91;
constexpr std::size_t kPLvl2Lat = 96;
constexpr std::size_t kPLvl3Lat = 98;
constexpr std::size_t kCentury = 108;
constexpr std::size_t kIapcBootArch = 109;
constexpr std::size_t kFlags = 112;
constexpr std::size_t kMinorRevision = 131;
constexpr std::size_t kXFirmwareCtrl = 132;
constexpr std::size_t kXDsdt = 140;
constexpr std::size_t kXPm1aEvtBlk = 148;
constexpr std::size_t kXPm1aCntBlk = 172;
constexpr std::size_t kXPmTmrBlk = 208;

constexpr std::uint8_t kPm1EvtBytes = 4; // PM1_STS + PM1_EN, 16 bits each
constexpr std::uint8_t kPm1CntBytes = 2;
constexpr std::uint8_t kPmTmrBytes = 4;
constexpr std::uint16_t kPm1CntOffset = 4; // PM1a_CNT follows PM1a_EVT in our port block

// Latencies above 100 us (C2) and 1000 us (C3) mean "state not supported".
constexpr std::uint16_t kNoC2 = 101;
constexpr std::uint16_t kNoC3 = 1001;

// The CMOS RTC register holding the century, as PCs have it.
constexpr std::uint8_t kCmosCentury = 0x32;

// IAPC_BOOT_ARCH. The i8042 bit stays clear so Linux does not probe for a
// PS/2 keyboard and mouse (the VMM's i8042 only serves the reset line); a
// clear CMOS_RTC_NOT_PRESENT bit (5) says the RTC is there.
constexpr std::uint16_t kBootLegacyDevices = 1u << 0;

// Flags.
constexpr std::uint32_t kWbinvd = 1u << 0;    // WBINVD flushes caches correctly
constexpr std::uint32_t kProcC1 = 1u << 2;    // C1 (HLT) works on every CPU
constexpr std::uint32_t kPwrButton = 1u << 4; // set: no fixed-feature power button
constexpr std::uint32_t kSlpButton = 1u << 5; // set: no fixed-feature sleep button
// TMR_VAL_EXT (bit 8) stays clear: the PM timer counts 24 bits.
// HW_REDUCED_ACPI (bit 20) stays clear: we have the fixed hardware.
} // namespace fadt

// Generic Address Structure (12 bytes) as the FADT's X_ blocks use it.
constexpr std::uint8_t kGasSystemIo = 1;
constexpr std::uint8_t kGasWordAccess = 2;  // the PM1 registers are 16 bits wide
constexpr std::uint8_t kGasDwordAccess = 3; // the PM timer is read as 32 bits

// FACS: no checksum, but 64-byte alignment.
constexpr std::size_t kFacsSize = 64;
constexpr std::size_t kFacsAlignment = 64;
constexpr std::uint8_t kFacsVersion = 2;
constexpr std::size_t kFacsVersionOffset = 32;

// DSDT definition block revision 2: AML integers are 64 bits.
constexpr std::uint8_t kDsdtRevision = 2;

// SLP_TYP is a 3-bit field, and values 0 and 1 would be ZeroOp/OneOp in AML
// rather than the BytePrefix encoding used below.
static_assert(kAcpiS5SleepType > 1 && kAcpiS5SleepType < 8);

// The DSDT's whole AML body (ACPI 6.5, 20.2.5.2 NameOp, 20.2.5.4 PackageOp):
//
//   Name (_S5, Package () { kAcpiS5SleepType, kAcpiS5SleepType, 0, 0 })
//
// SLP_TYPa, SLP_TYPb (no PM1b block, but ACPICA reads both), two reserved.
constexpr std::uint8_t kDsdtAml[] = {
    0x08, '_', 'S', '5', '_',   // NameOp, NameSeg "_S5_" (in the root scope)
    0x12, 0x08, 0x04,           // PackageOp, PkgLength (these 8 bytes from here on), NumElements
    0x0a, kAcpiS5SleepType,     // BytePrefix, SLP_TYPa
    0x0a, kAcpiS5SleepType,     // BytePrefix, SLP_TYPb
    0x00,                       // ZeroOp, reserved
    0x00,                       // ZeroOp, reserved
};
static_assert(sizeof kDsdtAml - 6 == 0x08, "PkgLength must count from itself to the end of the package");


constexpr std::uint64_t kOneMiB = 0x100000;
constexpr std::uint32_t kPortSpace = 0x10000;
constexpr std::uint32_t kPmBlockPorts = 6; // PM1a_EVT (4) then PM1a_CNT (2)
constexpr std::uint32_t kPmTimerPorts = fadt::kPmTmrBytes;


std::size_t align_up(std::size_t value, std::size_t alignment) {
    return (value + alignment - 1) / alignment * alignment;
}

// Where each table sits, as offsets from the blob's base.
struct Layout {
    std::size_t xsdt = 0;
    std::size_t rsdt = 0;
    std::size_t fadt = 0;
    std::size_t facs = 0;
    std::size_t dsdt = 0;
    std::size_t madt = 0;
    std::size_t madt_size = 0;
    std::size_t end = 0;
};


// Alignments are of guest-physical addresses, so they depend on the base
// (which is itself 16-byte aligned).
Layout plan(std::uint64_t base, std::uint32_t cpus) {
    Layout at;
    std::size_t next = kRsdpSize;
    const auto place = [&](std::size_t size, std::size_t alignment) {
        const std::size_t offset = align_up(base + next, alignment) - base;
        next = offset + size;
        return offset;
    };
    at.xsdt = place(kSdtHeaderSize + kRootEntries * sizeof(std::uint64_t), kTableAlignment);
    at.rsdt = place(kSdtHeaderSize + kRootEntries * sizeof(std::uint32_t), kTableAlignment);
    at.fadt = place(kFadtSize, kTableAlignment);
    at.facs = place(kFacsSize, kFacsAlignment);
    at.dsdt = place(kSdtHeaderSize + sizeof kDsdtAml, kTableAlignment);
    at.madt_size = madt_size(cpus);
    at.madt = place(at.madt_size, kTableAlignment);
    at.end = next;
    return at;
}

using Blob = FirmwareBlob;


void gas(Blob& blob, std::size_t at, std::uint8_t bit_width, std::uint8_t access_size, std::uint64_t port) {
    blob.u8(at, kGasSystemIo);
    blob.u8(at + 1, bit_width);
    blob.u8(at + 2, 0); // bit offset
    blob.u8(at + 3, access_size);
    blob.u64(at + 4, port);
}

void write_rsdp(Blob& blob, std::uint64_t base, const Layout& at) {
    blob.text(0, "RSD PTR ");
    blob.text(9, kOemId);
    blob.u8(15, kRsdpRevision);
    blob.u32(16, static_cast<std::uint32_t>(base + at.rsdt));
    blob.u32(20, static_cast<std::uint32_t>(kRsdpSize));
    blob.u64(24, base + at.xsdt);
    blob.checksum(0, kRsdpV1Size, 8);
    blob.checksum(0, kRsdpSize, 32); // covers the first checksum too, so it comes second
}

void write_root_tables(Blob& blob, std::uint64_t base, const Layout& at) {
    const std::uint64_t entries[kRootEntries] = {base + at.fadt, base + at.madt};

    const std::size_t xsdt_size = kSdtHeaderSize + kRootEntries * sizeof(std::uint64_t);
    write_header(blob, at.xsdt, "XSDT", xsdt_size, kXsdtRevision);
    for (std::size_t i = 0; i < kRootEntries; ++i) blob.u64(at.xsdt + kSdtHeaderSize + 8 * i, entries[i]);
    finish_table(blob, at.xsdt, xsdt_size);

    // For OSPMs that only follow the RSDP's 32-bit pointer; everything is below 1 MiB.
    const std::size_t rsdt_size = kSdtHeaderSize + kRootEntries * sizeof(std::uint32_t);
    write_header(blob, at.rsdt, "RSDT", rsdt_size, kRsdtRevision);
    for (std::size_t i = 0; i < kRootEntries; ++i)
        blob.u32(at.rsdt + kSdtHeaderSize + 4 * i, static_cast<std::uint32_t>(entries[i]));
    finish_table(blob, at.rsdt, rsdt_size);
}

void write_fadt(Blob& blob, const AcpiPlatform& platform, std::uint64_t base, const Layout& at) {
    using namespace fadt;
    const std::size_t f = at.fadt;
    const std::uint64_t facs = base + at.facs;
    const std::uint64_t dsdt = base + at.dsdt;
    const std::uint16_t pm1a_evt = platform.pm_base;
    const std::uint16_t pm1a_cnt = static_cast<std::uint16_t>(platform.pm_base + kPm1CntOffset);

    write_header(blob, f, "FACP", kFadtSize, kFadtRevision);
    blob.u32(f + kFirmwareCtrl, static_cast<std::uint32_t>(facs));
    blob.u32(f + kDsdt, static_cast<std::uint32_t>(dsdt));
    blob.u16(f + kSciInt, platform.sci_irq);
    // SMI_CMD 0: the platform is always in ACPI mode (SCI_EN reads 1), so
    // there is no handover from firmware to request and ACPI_ENABLE,
    // ACPI_DISABLE stay 0. No PM1b, PM2 or GPE blocks.
    blob.u32(f + kSmiCmd, 0);
    blob.u32(f + kPm1aEvtBlk, pm1a_evt);
    blob.u32(f + kPm1aCntBlk, pm1a_cnt);
    blob.u32(f + kPmTmrBlk, platform.pm_timer_port);
    blob.u8(f + kPm1EvtLen, kPm1EvtBytes);
    blob.u8(f + kPm1CntLen, kPm1CntBytes);
    blob.u8(f + kPmTmrLen, kPmTmrBytes);
    blob.u16(f + kPLvl2Lat, kNoC2);
    blob.u16(f + kPLvl3Lat, kNoC3);
    blob.u8(f + kCentury, kCmosCentury);
    blob.u16(f + kIapcBootArch, kBootLegacyDevices);
    // No RESET_REG_SUP: the VMM resets through the i8042, which Linux tries anyway.
    blob.u32(f + kFlags, kWbinvd | kProcC1 | kPwrButton | kSlpButton);
    blob.u8(f + kMinorRevision, kFadtMinorRevision);
    blob.u64(f + kXFirmwareCtrl, facs);
    blob.u64(f + kXDsdt, dsdt);
    gas(blob, f + kXPm1aEvtBlk, kPm1EvtBytes * 8, kGasWordAccess, pm1a_evt);
    gas(blob, f + kXPm1aCntBlk, kPm1CntBytes * 8, kGasWordAccess, pm1a_cnt);
    gas(blob, f + kXPmTmrBlk, kPmTmrBytes * 8, kGasDwordAccess, platform.pm_timer_port);
    finish_table(blob, f, kFadtSize);
}

void write_facs(Blob& blob, const Layout& at) {
    // All zero but signature, length and version: no waking vector (no S3
    // resume), no S4BIOS, and a global lock nobody but the OS ever takes.
    blob.text(at.facs, "FACS");
    blob.u32(at.facs + 4, static_cast<std::uint32_t>(kFacsSize));
    blob.u8(at.facs + kFacsVersionOffset, kFacsVersion);
}

void write_dsdt(Blob& blob, const Layout& at) {
    const std::size_t size = kSdtHeaderSize + sizeof kDsdtAml;
    write_header(blob, at.dsdt, "DSDT", size, kDsdtRevision);
    blob.bytes(at.dsdt + kSdtHeaderSize, kDsdtAml);
    finish_table(blob, at.dsdt, size);
}


void validate(const AcpiPlatform& platform, std::uint64_t base) {
    if (platform.cpus == 0 || platform.cpus > kAcpiMaxCpus)
        throw VmmError("ACPI tables: " + std::to_string(platform.cpus) + " vCPUs requested; expected 1 to " +
                       std::to_string(kAcpiMaxCpus));
    if (platform.sci_irq >= pc_wiring::kIsaIrqs || platform.sci_irq == pc_wiring::kPitIrq ||
        platform.sci_irq == pc_wiring::kPitIoApicPin)
        throw VmmError("ACPI tables: SCI IRQ " + std::to_string(platform.sci_irq) +
                       "; expected an ISA IRQ from 1 to 15 other than 2 (the PIT's GSI)");
    if (platform.pm_base == 0 || platform.pm_base > kPortSpace - kPmBlockPorts)
        throw VmmError("ACPI tables: PM1 registers at port " + hex(platform.pm_base) + "; expected " +
                       std::to_string(kPmBlockPorts) + " ports between 0x1 and " + hex(kPortSpace - 1));
    const std::uint32_t timer = platform.pm_timer_port;
    if (timer == 0 || timer > kPortSpace - kPmTimerPorts)
        throw VmmError("ACPI tables: PM timer at port " + hex(timer) + "; expected " + std::to_string(kPmTimerPorts) +
                       " ports between 0x1 and " + hex(kPortSpace - 1));
    const std::uint32_t pm = platform.pm_base;
    if (timer < pm + kPmBlockPorts && pm < timer + kPmTimerPorts)
        throw VmmError("ACPI tables: PM timer at ports " + hex(timer) + "-" + hex(timer + kPmTimerPorts - 1) +
                       " overlaps the PM1 registers at " + hex(pm) + "-" + hex(pm + kPmBlockPorts - 1) +
                       "; expected separate port ranges");
    if (base % kRsdpAlignment != 0)
        throw VmmError("ACPI tables at " + hex(base) + ": expected a 16-byte aligned address for the RSDP");
}

} // namespace

std::vector<std::uint8_t> build_acpi_tables(const AcpiPlatform& platform, std::uint64_t base_gpa) {
    validate(platform, base_gpa);
    if (base_gpa >= kOneMiB)
        throw VmmError("ACPI tables at " + hex(base_gpa) + ": expected an address below 1 MiB");
    const Layout at = plan(base_gpa, platform.cpus);
    if (at.end > kOneMiB - base_gpa)
        throw VmmError("ACPI tables for " + std::to_string(platform.cpus) + " vCPUs take " + std::to_string(at.end) +
                       " bytes; expected them to fit between " + hex(base_gpa) + " and 1 MiB");

    Blob blob(at.end);
    write_rsdp(blob, base_gpa, at);
    write_root_tables(blob, base_gpa, at);
    write_fadt(blob, platform, base_gpa, at);
    write_facs(blob, at);
    write_dsdt(blob, at);
    write_madt(blob, platform, at.madt, at.madt_size);
    return blob.take();
}

} // namespace hv
