// hv::build_acpi_tables: the blob is parsed back the way an OS finds its
// tables (acpi_blob.hpp): RSDP, root tables, checksums and layout, FADT,
// DSDT, and the platforms it refuses; the MADT in test_acpi_madt.cpp.
// Offsets and values below are from the ACPI 6.5 specification (5.2.5-
// 5.2.11, 20.2), not from acpi_tables.cpp.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <set>
#include <string>
#include <vector>

#include "tests/support/acpi_blob.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/platform/acpi_tables.hpp"

using namespace hv::test::acpi;

TEST_CASE("ACPI tables: the RSDP opens the blob with both checksums") {
    const Blob b = build(2);
    CHECK(b.text(0, 8) == "RSD PTR ");
    CHECK(b.u8(15) == 2);                // revision 2: ACPI 2.0+ with the XSDT
    CHECK(b.sum(0, 20) == 0);            // the ACPI 1.0 checksum covers the first 20 bytes
    CHECK(b.u32(20) == 36);              // length
    CHECK(b.sum(0, 36) == 0);            // the extended checksum covers all of it
    CHECK(b.text(xsdt_of(b), 4) == "XSDT");
    CHECK(b.text(rsdt_of(b), 4) == "RSDT");
    CHECK(b.base % 16 == 0);             // Linux's BIOS-area scan looks at 16-byte boundaries
}

TEST_CASE("ACPI tables: the XSDT and the RSDT list the FADT and the MADT") {
    const Blob b = build(2);
    std::set<std::string> signatures;
    for (std::size_t at : xsdt_tables(b)) signatures.insert(b.text(at, 4));
    CHECK(signatures == std::set<std::string>{"FACP", "APIC"});

    const std::size_t xsdt = xsdt_of(b), rsdt = rsdt_of(b);
    REQUIRE(b.length(rsdt) - 36 == (b.length(xsdt) - 36) / 2); // 32-bit vs 64-bit entries
    for (std::size_t i = 0; i < (b.length(rsdt) - 36) / 4; ++i)
        CHECK(std::uint64_t{b.u32(rsdt + 36 + 4 * i)} == b.u64(xsdt + 36 + 8 * i));
}

TEST_CASE("ACPI tables: every table sums to 0 over its length and is aligned") {
    for (std::uint32_t cpus : {1u, 2u, 255u, 300u, 1024u}) {
        CAPTURE(cpus);
        const Blob b = build(cpus);
        std::vector<std::size_t> tables = xsdt_tables(b);
        tables.push_back(xsdt_of(b));
        tables.push_back(rsdt_of(b));
        tables.push_back(dsdt_of(b));
        for (std::size_t at : tables) {
            CAPTURE(b.text(at, 4));
            CHECK(b.length(at) >= 36);
            CHECK(b.sum(at, b.length(at)) == 0);
            CHECK((b.base + at) % 8 == 0);
        }
        // The FACS has no checksum but must be 64-byte aligned (5.2.10).
        const std::size_t facs = facs_of(b);
        CHECK(b.text(facs, 4) == "FACS");
        CHECK(b.length(facs) == 64);
        CHECK(b.u8(facs + 32) == 2); // version
        CHECK((b.base + facs) % 64 == 0);
    }
}

TEST_CASE("ACPI tables: the tables do not overlap") {
    const Blob b = build(300);
    std::vector<std::pair<std::size_t, std::size_t>> ranges{{0, 36}};
    for (std::size_t at : {xsdt_of(b), rsdt_of(b), find_table(b, "FACP"), facs_of(b), dsdt_of(b),
                           find_table(b, "APIC")})
        ranges.emplace_back(at, at + b.length(at));
    for (std::size_t i = 0; i < ranges.size(); ++i)
        for (std::size_t j = i + 1; j < ranges.size(); ++j)
            CHECK((ranges[i].second <= ranges[j].first || ranges[j].second <= ranges[i].first));
}

TEST_CASE("ACPI tables: the FADT describes full fixed hardware with PM1a at 0x600 and the PM timer at 0x608") {
    const Blob b = build(2);
    const std::size_t f = find_table(b, "FACP");
    CHECK(b.length(f) == 276); // the ACPI 6.x FADT with the hypervisor vendor identity
    CHECK(b.u8(f + 8) == 6);   // revision
    CHECK(b.u8(f + 131) == 5); // minor revision: 6.5

    CHECK(b.u16(f + 46) == 9); // SCI_INT
    CHECK(b.u32(f + 48) == 0); // SMI_CMD: no ACPI mode switch, always in ACPI mode
    CHECK(b.u32(f + 56) == 0x600); // PM1a_EVT_BLK
    CHECK(b.u32(f + 60) == 0);     // PM1b_EVT_BLK
    CHECK(b.u32(f + 64) == 0x604); // PM1a_CNT_BLK
    CHECK(b.u32(f + 68) == 0);     // PM1b_CNT_BLK
    CHECK(b.u32(f + 72) == 0);     // PM2_CNT_BLK
    CHECK(b.u32(f + 76) == 0x608); // PM_TMR_BLK
    CHECK(b.u32(f + 80) == 0);     // GPE0_BLK
    CHECK(b.u32(f + 84) == 0);     // GPE1_BLK
    CHECK(b.u8(f + 88) == 4);      // PM1_EVT_LEN
    CHECK(b.u8(f + 89) == 2);      // PM1_CNT_LEN
    CHECK(b.u8(f + 90) == 0);      // PM2_CNT_LEN
    CHECK(b.u8(f + 91) == 4);      // PM_TMR_LEN
    CHECK(b.u8(f + 92) == 0);      // GPE0_BLK_LEN
    CHECK(b.u8(f + 93) == 0);      // GPE1_BLK_LEN
    CHECK(b.u8(f + 108) == 0x32);  // CENTURY

    const std::uint16_t boot_arch = b.u16(f + 109);
    CHECK((boot_arch & (1u << 0)) != 0); // LEGACY_DEVICES
    CHECK((boot_arch & (1u << 1)) == 0); // 8042: Linux must not probe a PS/2 keyboard
    CHECK((boot_arch & (1u << 5)) == 0); // CMOS RTC Not Present: it is present

    const std::uint32_t flags = b.u32(f + 112);
    CHECK((flags & (1u << 0)) != 0);  // WBINVD
    CHECK((flags & (1u << 2)) != 0);  // PROC_C1
    CHECK((flags & (1u << 4)) != 0);  // PWR_BUTTON: no fixed-feature power button
    CHECK((flags & (1u << 5)) != 0);  // SLP_BUTTON: no fixed-feature sleep button
    CHECK((flags & (1u << 8)) == 0);  // TMR_VAL_EXT: the PM timer counts 24 bits
    CHECK((flags & (1u << 10)) == 0); // RESET_REG_SUP
    CHECK((flags & (1u << 20)) == 0); // HW_REDUCED_ACPI

    // The 32-bit and 64-bit pointers agree and lead to the right tables.
    CHECK(std::uint64_t{b.u32(f + 36)} == b.u64(f + 132)); // FIRMWARE_CTRL / X_FIRMWARE_CTRL
    CHECK(std::uint64_t{b.u32(f + 40)} == b.u64(f + 140)); // DSDT / X_DSDT
    CHECK(b.text(dsdt_of(b), 4) == "DSDT");
    CHECK(b.text(facs_of(b), 4) == "FACS");

    // X_PM1a_EVT_BLK (148) and X_PM1a_CNT_BLK (172): system I/O, widths that
    // match the legacy lengths (ACPICA warns otherwise).
    const Gas evt = gas(b, f + 148);
    CHECK(evt.space == 1);
    CHECK(evt.bit_width == 32);
    CHECK(evt.bit_offset == 0);
    CHECK(evt.address == 0x600);
    const Gas cnt = gas(b, f + 172);
    CHECK(cnt.space == 1);
    CHECK(cnt.bit_width == 16);
    CHECK(cnt.bit_offset == 0);
    CHECK(cnt.address == 0x604);
    // X_PM_TMR_BLK (208): 32 bits of system I/O, read as a dword.
    const Gas tmr = gas(b, f + 208);
    CHECK(tmr.space == 1);
    CHECK(tmr.bit_width == 32);
    CHECK(tmr.bit_offset == 0);
    CHECK(tmr.access_size == 3);
    CHECK(tmr.address == 0x608);
    for (std::size_t unused : {160u, 184u, 196u, 220u, 232u, 244u, 256u}) { // PM1b, PM2, GPE0/1, SLEEP_*
        CAPTURE(unused);
        CHECK(gas(b, f + unused).address == 0);
    }
}

TEST_CASE("ACPI tables: the FADT follows a non-default PM base and SCI") {
    hv::AcpiPlatform platform;
    platform.pm_base = 0xb000;
    platform.pm_timer_port = 0xb008;
    platform.sci_irq = 11;
    const Blob b{hv::build_acpi_tables(platform, kBase), kBase};
    const std::size_t f = find_table(b, "FACP");
    CHECK(b.sum(f, b.length(f)) == 0);
    CHECK(b.u16(f + 46) == 11);
    CHECK(b.u32(f + 56) == 0xb000);
    CHECK(b.u32(f + 64) == 0xb004);
    CHECK(b.u32(f + 76) == 0xb008);
    CHECK(b.u8(f + 91) == 4);
    CHECK(gas(b, f + 148).address == 0xb000);
    CHECK(gas(b, f + 172).address == 0xb004);
    CHECK(gas(b, f + 208).address == 0xb008);
    const auto overrides = entries_of_type(b, 2);
    REQUIRE(overrides.size() == 2); // IRQ 0 and the SCI
    CHECK(b.u8(overrides[1].at + 3) == 11);
    CHECK(b.u32(overrides[1].at + 4) == 11);
}

TEST_CASE("ACPI tables: the DSDT holds the _S5_ package and nothing else") {
    const Blob b = build(2);
    const std::size_t d = dsdt_of(b);
    CHECK(b.u8(d + 8) == 2); // revision 2: 64-bit AML integers
    // Name (_S5, Package () { 5, 5, 0, 0 }) per ACPI 6.5 20.2.5.2 / 20.2.5.4:
    // NameOp 0x08, NameSeg, PackageOp 0x12, PkgLength (counting itself to
    // the end: 8), NumElements 4, two BytePrefix (0x0a) constants, two ZeroOp.
    const std::vector<std::uint8_t> expected{
        0x08, '_', 'S', '5', '_', 0x12, 0x08, 0x04, 0x0a, hv::kAcpiS5SleepType, 0x0a, hv::kAcpiS5SleepType,
        0x00, 0x00};
    REQUIRE(b.length(d) == 36 + expected.size());
    const std::vector<std::uint8_t> aml(b.bytes.begin() + static_cast<std::ptrdiff_t>(d + 36),
                                        b.bytes.begin() + static_cast<std::ptrdiff_t>(d + b.length(d)));
    CHECK(aml == expected);
    CHECK(hv::kAcpiS5SleepType == 5);
}

TEST_CASE("ACPI tables: the CPU count must be 1 to 1024") {
    hv::AcpiPlatform platform;
    platform.cpus = 0;
    CHECK_THROWS_WITH_AS(hv::build_acpi_tables(platform, kBase), doctest::Contains("0 vCPUs"), hv::VmmError);
    platform.cpus = 1025;
    CHECK_THROWS_WITH_AS(hv::build_acpi_tables(platform, kBase), doctest::Contains("1025 vCPUs requested; expected 1 to 1024"),
                         hv::VmmError);
    platform.cpus = 1024;
    CHECK_NOTHROW(hv::build_acpi_tables(platform, kBase));
}

TEST_CASE("ACPI tables: the blob must end at or below 1 MiB") {
    const std::size_t size = build(2).bytes.size();
    // A 64-byte aligned base lays out exactly like 0xe0000, so this one fits to the byte...
    const std::uint64_t highest = (0x100000 - size) & ~std::uint64_t{63};
    CHECK(build(2, highest).bytes.size() == size);
    // ...and one 64 bytes higher does not.
    CHECK_THROWS_WITH_AS(build(2, highest + 64), doctest::Contains("expected them to fit between"), hv::VmmError);
    CHECK_THROWS_AS(build(2, 0x100000), hv::VmmError);
    CHECK_THROWS_AS(build(2, 0xffffffff00000000), hv::VmmError);
    // 1024 vCPUs still fit in the BIOS area.
    CHECK(build(1024).bytes.size() < 0x20000);
}

TEST_CASE("ACPI tables: other bad platforms are refused") {
    CHECK_THROWS_WITH_AS(build(2, kBase + 8), doctest::Contains("16-byte aligned"), hv::VmmError);
    hv::AcpiPlatform platform;
    platform.sci_irq = 16;
    CHECK_THROWS_WITH_AS(hv::build_acpi_tables(platform, kBase), doctest::Contains("SCI IRQ 16"), hv::VmmError);
    for (std::uint8_t taken : {0, 2}) { // the PIT's IRQ and GSI
        platform.sci_irq = taken;
        CHECK_THROWS_WITH_AS(hv::build_acpi_tables(platform, kBase),
                             doctest::Contains("expected an ISA IRQ from 1 to 15 other than 2"), hv::VmmError);
    }
    platform = {};
    platform.pm_base = 0;
    CHECK_THROWS_AS(hv::build_acpi_tables(platform, kBase), hv::VmmError);
    platform.pm_base = 0xfffb;
    CHECK_THROWS_WITH_AS(hv::build_acpi_tables(platform, kBase), doctest::Contains("port 0xfffb"), hv::VmmError);
    platform.pm_base = 0xfffa;
    CHECK_NOTHROW(hv::build_acpi_tables(platform, kBase));
}

TEST_CASE("ACPI tables: the PM timer block must be inside the port space and apart from PM1") {
    hv::AcpiPlatform platform;
    platform.pm_timer_port = 0;
    CHECK_THROWS_WITH_AS(hv::build_acpi_tables(platform, kBase), doctest::Contains("PM timer at port 0x0"),
                         hv::VmmError);
    platform.pm_timer_port = 0xfffd; // its 4 ports would run past 0xffff
    CHECK_THROWS_WITH_AS(hv::build_acpi_tables(platform, kBase),
                         doctest::Contains("PM timer at port 0xfffd; expected 4 ports between 0x1 and 0xffff"),
                         hv::VmmError);
    platform.pm_timer_port = 0xfffc;
    CHECK_NOTHROW(hv::build_acpi_tables(platform, kBase));

    // PM1 takes 0x600-0x605: a timer from 0x5fd to 0x605 overlaps it.
    for (std::uint16_t port : {0x5fd, 0x600, 0x602, 0x605}) {
        CAPTURE(port);
        platform.pm_timer_port = port;
        CHECK_THROWS_WITH_AS(hv::build_acpi_tables(platform, kBase),
                             doctest::Contains("overlaps the PM1 registers at 0x600-0x605"), hv::VmmError);
    }
    for (std::uint16_t port : {0x5fc, 0x606}) {
        CAPTURE(port);
        platform.pm_timer_port = port;
        const Blob b{hv::build_acpi_tables(platform, kBase), kBase};
        const std::size_t f = find_table(b, "FACP");
        CHECK(b.u32(f + 76) == port);
        CHECK(b.sum(f, b.length(f)) == 0);
    }
}
