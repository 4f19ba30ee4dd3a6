// hv::AcpiPmRegisters: PM1_STS (offset 0), PM1_EN (2), PM1_CNT (4), with
// bit positions from ACPI 6.5, 4.8.4.1 (PM1 event grouping: WAK_STS bit 15)
// and 4.8.4.2 (PM1 control grouping: SCI_EN bit 0, SLP_TYP bits 10-12,
// SLP_EN bit 13).
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <vector>

#include "devices/acpi_pm.hpp"
#include "devices/bus.hpp"

namespace {

constexpr std::uint16_t kSciEn = 1u << 0;
constexpr std::uint16_t kSlpEn = 1u << 13;
constexpr std::uint16_t kWakSts = 1u << 15;
constexpr std::uint16_t slp_typ(unsigned type) { return static_cast<std::uint16_t>(type << 10); }

struct Pm {
    std::vector<std::uint8_t> sleeps;
    hv::AcpiPmRegisters dev{[this](std::uint8_t type) { sleeps.push_back(type); }};

    std::uint16_t read16(std::uint64_t offset) {
        std::array<std::uint8_t, 2> data{0xaa, 0xaa};
        dev.read(offset, data);
        return static_cast<std::uint16_t>(data[0] | data[1] << 8);
    }
    std::uint8_t read8(std::uint64_t offset) {
        std::array<std::uint8_t, 1> data{0xaa};
        dev.read(offset, data);
        return data[0];
    }
    void write16(std::uint64_t offset, std::uint16_t value) {
        const std::array<std::uint8_t, 2> data{static_cast<std::uint8_t>(value), static_cast<std::uint8_t>(value >> 8)};
        dev.write(offset, data);
    }
    void write8(std::uint64_t offset, std::uint8_t value) {
        const std::array<std::uint8_t, 1> data{value};
        dev.write(offset, data);
    }
};

} // namespace

TEST_CASE("AcpiPmRegisters: after reset only SCI_EN is set") {
    Pm pm;
    CHECK(pm.read16(0) == 0);      // PM1_STS
    CHECK(pm.read16(2) == 0);      // PM1_EN
    CHECK(pm.read16(4) == kSciEn); // PM1_CNT: always in ACPI mode
    CHECK(pm.sleeps.empty());
}

TEST_CASE("AcpiPmRegisters: SCI_EN cannot be cleared") {
    Pm pm;
    pm.write16(4, 0);
    CHECK(pm.read16(4) == kSciEn);
    pm.write8(4, 0);
    CHECK(pm.read8(4) == kSciEn);
    CHECK(pm.sleeps.empty());
}

TEST_CASE("AcpiPmRegisters: SLP_TYP reads back what was written") {
    Pm pm;
    for (unsigned type = 0; type < 8; ++type) {
        CAPTURE(type);
        pm.write16(4, slp_typ(type));
        CHECK(pm.read16(4) == (slp_typ(type) | kSciEn));
    }
    // Bits outside SCI_EN and SLP_TYP read 0 whatever is written (SLP_EN
    // aside: it would start a sleep).
    pm.write16(4, static_cast<std::uint16_t>(0xffff & ~kSlpEn));
    CHECK(pm.read16(4) == (slp_typ(7) | kSciEn));
    CHECK(pm.sleeps.empty());
}

TEST_CASE("AcpiPmRegisters: a 16-bit write with SLP_EN reports the sleep type") {
    Pm pm;
    // Linux's acpi_hw_legacy_sleep: write SLP_TYP, then SLP_TYP | SLP_EN.
    pm.write16(4, slp_typ(5));
    CHECK(pm.sleeps.empty());
    pm.write16(4, slp_typ(5) | kSlpEn);
    CHECK(pm.sleeps == std::vector<std::uint8_t>{5});
    // SLP_EN is write-only; SLP_TYP stays.
    CHECK(pm.read16(4) == (slp_typ(5) | kSciEn));
    // Each write with SLP_EN is a new request.
    pm.write16(4, slp_typ(3) | kSlpEn);
    CHECK(pm.sleeps == std::vector<std::uint8_t>{5, 3});
}

TEST_CASE("AcpiPmRegisters: a byte write of SLP_EN to offset 5 reports the sleep type") {
    Pm pm;
    pm.write8(5, static_cast<std::uint8_t>(slp_typ(5) >> 8)); // SLP_TYP only
    CHECK(pm.sleeps.empty());
    CHECK(pm.read16(4) == (slp_typ(5) | kSciEn));
    pm.write8(5, static_cast<std::uint8_t>((slp_typ(5) | kSlpEn) >> 8));
    CHECK(pm.sleeps == std::vector<std::uint8_t>{5});
    CHECK(pm.read8(5) == (slp_typ(5) >> 8));
    // The low byte alone never starts a sleep nor changes SLP_TYP.
    pm.write8(4, 0xff);
    CHECK(pm.sleeps.size() == 1);
    CHECK(pm.read16(4) == (slp_typ(5) | kSciEn));
}

TEST_CASE("AcpiPmRegisters: entering a sleep sets WAK_STS which is write-1-to-clear") {
    Pm pm;
    pm.write16(4, slp_typ(5) | kSlpEn);
    CHECK(pm.read16(0) == kWakSts);
    pm.write16(0, 0);           // writing 0 leaves it
    CHECK(pm.read16(0) == kWakSts);
    pm.write16(0, 0x7fff);      // writing 1 to other bits leaves it
    CHECK(pm.read16(0) == kWakSts);
    pm.write8(0, 0xff);         // the low byte holds no WAK_STS
    CHECK(pm.read16(0) == kWakSts);
    pm.write8(1, 0x80);         // a byte write of bit 15 clears it
    CHECK(pm.read16(0) == 0);

    pm.write16(4, slp_typ(1) | kSlpEn);
    CHECK(pm.read16(0) == kWakSts);
    pm.write16(0, kWakSts);
    CHECK(pm.read16(0) == 0);
    CHECK(pm.sleeps == std::vector<std::uint8_t>{5, 1});
}

TEST_CASE("AcpiPmRegisters: PM1_EN reads back what was written") {
    Pm pm;
    pm.write16(2, 0x0521); // TMR_EN, GBL_EN, PWRBTN_EN, RTC_EN
    CHECK(pm.read16(2) == 0x0521);
    pm.write8(3, 0xff);    // the upper byte alone
    CHECK(pm.read16(2) == 0xff21);
    pm.write8(2, 0x00);    // the lower byte alone
    CHECK(pm.read16(2) == 0xff00);
    pm.write16(2, 0);
    CHECK(pm.read16(2) == 0);
    CHECK(pm.read16(0) == 0); // PM1_STS untouched
    CHECK(pm.sleeps.empty());
}

TEST_CASE("AcpiPmRegisters: a dword access covers two registers") {
    Pm pm;
    // outl to PM1_EN: PM1_EN gets the low half, PM1_CNT the high half.
    const std::uint32_t value = 0x0521u | std::uint32_t{slp_typ(5) | kSlpEn} << 16;
    const std::array<std::uint8_t, 4> out{static_cast<std::uint8_t>(value), static_cast<std::uint8_t>(value >> 8),
                                          static_cast<std::uint8_t>(value >> 16),
                                          static_cast<std::uint8_t>(value >> 24)};
    pm.dev.write(2, out);
    CHECK(pm.sleeps == std::vector<std::uint8_t>{5});
    CHECK(pm.read16(2) == 0x0521);

    std::array<std::uint8_t, 4> in{};
    pm.dev.read(0, in); // PM1_STS | PM1_EN << 16
    CHECK(in == std::array<std::uint8_t, 4>{0x00, 0x80, 0x21, 0x05});
    pm.dev.read(2, in); // PM1_EN | PM1_CNT << 16
    CHECK(in == std::array<std::uint8_t, 4>{0x21, 0x05, 0x01, 0x14});
}

TEST_CASE("AcpiPmRegisters: unaligned accesses and bytes past the end") {
    Pm pm;
    pm.write16(2, 0x1234);
    // A word at offset 1 is PM1_STS's upper byte and PM1_EN's lower byte.
    CHECK(pm.read16(1) == 0x3400);
    pm.write16(3, 0xff56);                // PM1_EN upper byte, PM1_CNT lower byte
    CHECK(pm.read16(2) == 0x5634);
    CHECK(pm.read16(4) == kSciEn);        // the PM1_CNT low byte is not writable
    CHECK(pm.sleeps.empty());

    // A dword at offset 4 runs two bytes past the 6-byte range: they read
    // as an open bus and writes to them are dropped.
    std::array<std::uint8_t, 4> in{};
    pm.dev.read(4, in);
    CHECK(in == std::array<std::uint8_t, 4>{0x01, 0x00, 0xff, 0xff});
    const std::array<std::uint8_t, 4> out{0x00, static_cast<std::uint8_t>((slp_typ(5) | kSlpEn) >> 8), 0xff, 0xff};
    pm.dev.write(4, out);
    CHECK(pm.sleeps == std::vector<std::uint8_t>{5});
    pm.write8(5, 0);

    // A qword read at offset 0 sees all three registers then open bus.
    std::array<std::uint8_t, 8> all{};
    pm.dev.read(0, all);
    CHECK(all == std::array<std::uint8_t, 8>{0x00, 0x80, 0x34, 0x56, 0x01, 0x00, 0xff, 0xff});
    CHECK(pm.read8(5) == 0);
}

TEST_CASE("AcpiPmRegisters behind the port bus at 0x600") {
    Pm pm;
    hv::Bus bus("port");
    bus.add(0x600, hv::AcpiPmRegisters::size, pm.dev, "acpi-pm");
    const std::array<std::uint8_t, 2> sleep{0x00, static_cast<std::uint8_t>((slp_typ(5) | kSlpEn) >> 8)};
    CHECK(bus.write(0x604, sleep) == hv::BusResult::Handled);
    CHECK(pm.sleeps == std::vector<std::uint8_t>{5});
    std::array<std::uint8_t, 2> cnt{};
    CHECK(bus.read(0x604, cnt) == hv::BusResult::Handled);
    CHECK(cnt == std::array<std::uint8_t, 2>{0x01, 0x14});
    CHECK(bus.device_at(0x605).has_value());
    CHECK_FALSE(bus.device_at(0x606).has_value());
}
