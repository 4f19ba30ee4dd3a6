#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <ctime>

#include "devices/bus.hpp"
#include "devices/cmos_rtc.hpp"

namespace {

// Register indices and bits as a guest driver sees them.
constexpr uint8_t SECONDS = 0x00, SECONDS_ALARM = 0x01, MINUTES = 0x02, HOURS = 0x04,
                  WEEKDAY = 0x06, DAY = 0x07, MONTH = 0x08, YEAR = 0x09, REG_A = 0x0a,
                  REG_B = 0x0b, REG_C = 0x0c, REG_D = 0x0d, SHUTDOWN = 0x0f, CENTURY = 0x32;
constexpr uint8_t B_SET = 0x80, B_UIE = 0x10, B_BINARY = 0x04, B_24H = 0x02;
constexpr uint8_t NMI_DISABLE = 0x80;

constexpr uint64_t MiB = 1024 * 1024;
constexpr uint64_t GiB = 1024 * MiB;

// 2026-12-02 03:04:05 UTC, a Wednesday.
constexpr std::time_t kDecember2nd = 1796180645;

struct Rtc {
    std::time_t clock = kDecember2nd;
    hv::CmosRtc dev;

    explicit Rtc(uint64_t ram_bytes = 256 * MiB) : dev(ram_bytes, [this] { return clock; }) {}

    uint8_t rd(uint8_t index) {
        const std::array<uint8_t, 1> select{index};
        dev.write(0, select);
        std::array<uint8_t, 1> value{0};
        dev.read(1, value);
        return value[0];
    }
    void wr(uint8_t index, uint8_t value) {
        const std::array<uint8_t, 1> select{index};
        dev.write(0, select);
        const std::array<uint8_t, 1> byte{value};
        dev.write(1, byte);
    }
    unsigned rd16(uint8_t index) { return rd(index) | (unsigned{rd(static_cast<uint8_t>(index + 1))} << 8); }
};

}  // namespace

TEST_CASE("CmosRtc decodes a fixed time in BCD by default") {
    Rtc rtc;
    CHECK(rtc.rd(REG_B) == B_24H);
    CHECK(rtc.rd(SECONDS) == 0x05);
    CHECK(rtc.rd(MINUTES) == 0x04);
    CHECK(rtc.rd(HOURS) == 0x03);
    CHECK(rtc.rd(WEEKDAY) == 0x04);  // 1 = Sunday
    CHECK(rtc.rd(DAY) == 0x02);
    CHECK(rtc.rd(MONTH) == 0x12);
    CHECK(rtc.rd(YEAR) == 0x26);
    CHECK(rtc.rd(CENTURY) == 0x20);

    rtc.clock += 3600 * 20 + 60 * 55 + 54;  // 23:59:59
    CHECK(rtc.rd(SECONDS) == 0x59);
    CHECK(rtc.rd(MINUTES) == 0x59);
    CHECK(rtc.rd(HOURS) == 0x23);
}

TEST_CASE("CmosRtc binary mode reports plain numbers") {
    Rtc rtc;
    rtc.wr(REG_B, B_24H | B_BINARY);
    CHECK(rtc.rd(REG_B) == (B_24H | B_BINARY));
    CHECK(rtc.rd(SECONDS) == 5);
    CHECK(rtc.rd(MINUTES) == 4);
    CHECK(rtc.rd(HOURS) == 3);
    CHECK(rtc.rd(WEEKDAY) == 4);
    CHECK(rtc.rd(DAY) == 2);
    CHECK(rtc.rd(MONTH) == 12);
    CHECK(rtc.rd(YEAR) == 26);
    CHECK(rtc.rd(CENTURY) == 20);
}

TEST_CASE("CmosRtc 12-hour mode marks PM in bit 7") {
    Rtc rtc;
    rtc.wr(REG_B, 0x00);  // BCD, 12-hour
    CHECK(rtc.rd(HOURS) == 0x03);  // 3 AM

    rtc.clock = kDecember2nd - 3 * 3600;  // 00:04:05
    CHECK(rtc.rd(HOURS) == 0x12);         // 12 AM
    rtc.clock = kDecember2nd + 9 * 3600;  // 12:04:05
    CHECK(rtc.rd(HOURS) == (0x80 | 0x12));
    rtc.clock = kDecember2nd + 20 * 3600;  // 23:04:05
    CHECK(rtc.rd(HOURS) == (0x80 | 0x11));

    rtc.wr(REG_B, B_BINARY);  // binary, 12-hour
    CHECK(rtc.rd(HOURS) == (0x80 | 11));

    // Writing 3 PM in 12-hour BCD means 15:00 in 24-hour mode.
    rtc.wr(REG_B, 0x00);
    rtc.wr(HOURS, 0x80 | 0x03);
    rtc.wr(REG_B, B_24H);
    CHECK(rtc.rd(HOURS) == 0x15);
    // And 12 AM is midnight.
    rtc.wr(REG_B, 0x00);
    rtc.wr(HOURS, 0x12);
    rtc.wr(REG_B, B_24H);
    CHECK(rtc.rd(HOURS) == 0x00);
}

TEST_CASE("CmosRtc keeps guest-set time and advances it with the clock") {
    Rtc rtc;
    // Linux's order: SET, then seconds up to year, then clear SET. Between
    // the month and the year the date reads 2026-02-29, which does not exist.
    rtc.wr(REG_B, B_SET | B_24H);
    rtc.wr(SECONDS, 0x30);
    rtc.wr(MINUTES, 0x15);
    rtc.wr(HOURS, 0x10);
    rtc.wr(DAY, 0x29);
    rtc.wr(MONTH, 0x02);
    rtc.clock += 7;  // the clock stands still while SET is set
    CHECK(rtc.rd(SECONDS) == 0x30);
    CHECK(rtc.rd(DAY) == 0x29);
    CHECK(rtc.rd(MONTH) == 0x02);
    rtc.wr(YEAR, 0x24);
    rtc.wr(CENTURY, 0x20);
    rtc.wr(REG_B, B_24H);

    rtc.clock += 65;
    CHECK(rtc.rd(SECONDS) == 0x35);
    CHECK(rtc.rd(MINUTES) == 0x16);
    CHECK(rtc.rd(HOURS) == 0x10);
    CHECK(rtc.rd(DAY) == 0x29);
    CHECK(rtc.rd(MONTH) == 0x02);
    CHECK(rtc.rd(YEAR) == 0x24);
    CHECK(rtc.rd(CENTURY) == 0x20);
    CHECK(rtc.rd(WEEKDAY) == 0x05);  // 2024-02-29 was a Thursday

    rtc.clock += 14 * 3600;  // past midnight into March
    CHECK(rtc.rd(DAY) == 0x01);
    CHECK(rtc.rd(MONTH) == 0x03);
}

TEST_CASE("CmosRtc applies a single time write without SET") {
    Rtc rtc;
    rtc.wr(REG_B, B_24H | B_BINARY);
    rtc.wr(MINUTES, 59);
    rtc.wr(YEAR, 99);
    rtc.wr(CENTURY, 19);
    CHECK(rtc.rd(MINUTES) == 59);
    CHECK(rtc.rd(HOURS) == 3);
    rtc.clock += 55;  // 03:59:05 + 55 s rolls into the next hour
    CHECK(rtc.rd(SECONDS) == 0);
    CHECK(rtc.rd(MINUTES) == 0);
    CHECK(rtc.rd(HOURS) == 4);
    CHECK(rtc.rd(DAY) == 2);
    CHECK(rtc.rd(MONTH) == 12);
    CHECK(rtc.rd(YEAR) == 99);
    CHECK(rtc.rd(CENTURY) == 19);

    rtc.wr(WEEKDAY, 1);  // derived from the date: the write is ignored
    CHECK(rtc.rd(WEEKDAY) == 5);  // 1999-12-02 was a Thursday
}

TEST_CASE("CmosRtc setting SET clears the update interrupt enable") {
    Rtc rtc;
    rtc.wr(REG_B, B_24H | B_UIE);
    CHECK(rtc.rd(REG_B) == (B_24H | B_UIE));
    rtc.wr(REG_B, B_SET | B_24H | B_UIE);
    CHECK(rtc.rd(REG_B) == (B_SET | B_24H));
}

TEST_CASE("CmosRtc status registers A C and D") {
    Rtc rtc;
    CHECK(rtc.rd(REG_A) == 0x26);
    rtc.wr(REG_A, 0x80 | 0x2f);  // UIP is read-only
    CHECK(rtc.rd(REG_A) == 0x2f);

    CHECK(rtc.rd(REG_C) == 0x00);
    rtc.wr(REG_C, 0xff);
    CHECK(rtc.rd(REG_C) == 0x00);

    CHECK(rtc.rd(REG_D) == 0x80);
    rtc.wr(REG_D, 0x00);
    CHECK(rtc.rd(REG_D) == 0x80);
}

TEST_CASE("CmosRtc masks the NMI bit out of the index") {
    Rtc rtc;
    CHECK_FALSE(rtc.dev.nmi_disabled());
    rtc.wr(NMI_DISABLE | SHUTDOWN, 0x5a);
    CHECK(rtc.dev.nmi_disabled());
    CHECK(rtc.rd(SHUTDOWN) == 0x5a);
    CHECK_FALSE(rtc.dev.nmi_disabled());
    CHECK(rtc.rd(NMI_DISABLE | REG_D) == 0x80);
    CHECK(rtc.rd(NMI_DISABLE | SECONDS) == 0x05);
    CHECK(rtc.rd(0xff) == rtc.rd(0x7f));
}

TEST_CASE("CmosRtc alarms and other bytes are plain RAM") {
    Rtc rtc;
    rtc.wr(SECONDS_ALARM, 0x42);
    rtc.wr(0x03, 0x43);
    rtc.wr(0x05, 0x44);
    rtc.wr(SHUTDOWN, 0x0a);
    rtc.wr(0x7f, 0x99);
    CHECK(rtc.rd(SECONDS_ALARM) == 0x42);
    CHECK(rtc.rd(0x03) == 0x43);
    CHECK(rtc.rd(0x05) == 0x44);
    CHECK(rtc.rd(SHUTDOWN) == 0x0a);
    CHECK(rtc.rd(0x7f) == 0x99);
    CHECK(rtc.rd(0x40) == 0x00);
    CHECK(rtc.rd(SECONDS) == 0x05);  // the alarm write did not move the clock
}

TEST_CASE("CmosRtc memory size bytes for 256 MiB") {
    Rtc rtc(256 * MiB);
    CHECK(rtc.rd16(0x15) == 640);
    CHECK(rtc.rd16(0x17) == 0xffff);  // 261120 KiB, capped
    CHECK(rtc.rd16(0x30) == 0xffff);
    CHECK(rtc.rd16(0x34) == (256 - 16) * 16);  // 64 KiB units
    CHECK(rtc.rd(0x5b) == 0);
    CHECK(rtc.rd(0x5c) == 0);
    CHECK(rtc.rd(0x5d) == 0);
}

TEST_CASE("CmosRtc memory size bytes for 6 GiB") {
    Rtc rtc(6 * GiB);
    CHECK(rtc.rd16(0x15) == 640);
    CHECK(rtc.rd16(0x17) == 0xffff);
    CHECK(rtc.rd16(0x30) == 0xffff);
    CHECK(rtc.rd16(0x34) == 0xff00);  // 16 MiB up to 4 GiB
    CHECK(rtc.rd(0x5b) == 0x00);      // 2 GiB above 4 GiB = 0x8000 x 64 KiB
    CHECK(rtc.rd(0x5c) == 0x80);
    CHECK(rtc.rd(0x5d) == 0x00);
}

TEST_CASE("CmosRtc memory size bytes for small guests") {
    Rtc eight(8 * MiB);
    CHECK(eight.rd16(0x15) == 640);
    CHECK(eight.rd16(0x17) == 7 * 1024);
    CHECK(eight.rd16(0x30) == 7 * 1024);
    CHECK(eight.rd16(0x34) == 0);

    Rtc tiny(512 * 1024);
    CHECK(tiny.rd16(0x15) == 512);
    CHECK(tiny.rd16(0x17) == 0);
}

TEST_CASE("CmosRtc wider accesses are split across the two ports") {
    Rtc rtc;
    // outw 0x70 with AL = index and AH = value, as some BIOSes write CMOS.
    const std::array<uint8_t, 2> index_and_value{SHUTDOWN, 0x0b};
    rtc.dev.write(0, index_and_value);
    CHECK(rtc.rd(SHUTDOWN) == 0x0b);

    // The index port reads as 0xff; the data byte follows it.
    std::array<uint8_t, 2> word{0, 0};
    rtc.dev.read(0, word);
    CHECK(word == std::array<uint8_t, 2>{0xff, 0x0b});

    // A dword at the data port: bytes past the device read 0xff and writes
    // to them are dropped.
    std::array<uint8_t, 4> dword{0, 0, 0, 0};
    rtc.dev.read(1, dword);
    CHECK(dword == std::array<uint8_t, 4>{0x0b, 0xff, 0xff, 0xff});
    const std::array<uint8_t, 4> data{0x0c, 0x01, 0x02, 0x03};
    rtc.dev.write(1, data);
    CHECK(rtc.rd(SHUTDOWN) == 0x0c);
    CHECK(rtc.rd(0x01) == 0x00);
}

TEST_CASE("CmosRtc behind the port bus at 0x70") {
    Rtc rtc;
    hv::Bus bus("port");
    bus.add(hv::CmosRtc::port, hv::CmosRtc::size, rtc.dev, "cmos-rtc");
    CHECK_FALSE(bus.device_at(0x72).has_value());
    const std::array<uint8_t, 1> select{NMI_DISABLE | YEAR};
    CHECK(bus.write(0x70, select) == hv::BusResult::Handled);
    std::array<uint8_t, 1> year{0};
    CHECK(bus.read(0x71, year) == hv::BusResult::Handled);
    CHECK(year[0] == 0x26);
}

TEST_CASE("CmosRtc defaults to the host's UTC clock") {
    const std::time_t before = std::time(nullptr);
    hv::CmosRtc rtc(256 * MiB);
    const std::array<uint8_t, 1> select_b{REG_B};
    rtc.write(0, select_b);
    const std::array<uint8_t, 1> binary{B_24H | B_BINARY};
    rtc.write(1, binary);

    auto read_register = [&rtc](uint8_t index) {
        const std::array<uint8_t, 1> select{index};
        rtc.write(0, select);
        std::array<uint8_t, 1> value{0};
        rtc.read(1, value);
        return int{value[0]};
    };
    const int year = read_register(CENTURY) * 100 + read_register(YEAR);
    const std::time_t after = std::time(nullptr);
    std::tm tm_before{};
    std::tm tm_after{};
    gmtime_r(&before, &tm_before);
    gmtime_r(&after, &tm_after);
    CHECK(year >= tm_before.tm_year + 1900);
    CHECK(year <= tm_after.tm_year + 1900);
}
