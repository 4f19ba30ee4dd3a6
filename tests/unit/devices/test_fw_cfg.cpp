// hv::FwCfg: QEMU's fw_cfg legacy I/O interface, read the way firmware and
// test kernels read it (a 16-bit selector write to 0x510, byte reads from
// 0x511). Keys and layouts from QEMU's docs/specs/fw_cfg.rst.
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "devices/bus.hpp"
#include "devices/fw_cfg.hpp"
#include "tests/support/text_match.hpp"

using hv::test::bytes_of;

namespace {

struct Cfg {
    hv::FwCfg dev;
    explicit Cfg(const hv::FwCfgConfig& config) : dev(config) {}

    void select(std::uint16_t key) {
        const std::array<std::uint8_t, 2> data{static_cast<std::uint8_t>(key), static_cast<std::uint8_t>(key >> 8)};
        dev.write(0, data);
    }
    std::vector<std::uint8_t> read(std::size_t n) {
        std::vector<std::uint8_t> bytes;
        for (std::size_t i = 0; i < n; ++i) {
            std::array<std::uint8_t, 1> data{0xaa};
            dev.read(1, data);
            bytes.push_back(data[0]);
        }
        return bytes;
    }
    std::vector<std::uint8_t> item(std::uint16_t key, std::size_t n) {
        select(key);
        return read(n);
    }
    std::uint64_t le(std::uint16_t key, std::size_t width) {
        std::uint64_t value = 0;
        const std::vector<std::uint8_t> bytes = item(key, width);
        for (std::size_t i = 0; i < width; ++i) value |= std::uint64_t{bytes[i]} << (8 * i);
        return value;
    }
};

hv::FwCfgConfig config(std::string cmdline = "") {
    hv::FwCfgConfig c;
    c.cpus = 4;
    c.max_cpus = 8;
    c.ram_size = 0x1'2345'6000;
    c.cmdline = std::move(cmdline);
    return c;
}

} // namespace

TEST_CASE("fw_cfg: signature, ID and UUID") {
    Cfg cfg(config());
    CHECK(cfg.item(0x0000, 4) == bytes_of("QEMU"));
    CHECK(cfg.le(0x0001, 4) == 1); // traditional interface only: bit 1 (DMA) clear
    CHECK(cfg.item(0x0002, 16) == std::vector<std::uint8_t>(16, 0));
}

TEST_CASE("fw_cfg: the signature is selected from the start") {
    Cfg cfg(config());
    CHECK(cfg.read(4) == bytes_of("QEMU"));
}

TEST_CASE("fw_cfg: RAM size, CPU count and max CPUs are little-endian") {
    Cfg cfg(config());
    CHECK(cfg.item(0x0003, 8) == std::vector<std::uint8_t>{0x00, 0x60, 0x45, 0x23, 0x01, 0, 0, 0});
    CHECK(cfg.le(0x0005, 2) == 4);
    CHECK(cfg.le(0x000f, 2) == 8);

    hv::FwCfgConfig big = config();
    big.cpus = 1024;
    big.max_cpus = 1024;
    big.ram_size = 0xfec00000;
    Cfg cfg2(big);
    CHECK(cfg2.le(0x0005, 2) == 1024);
    CHECK(cfg2.le(0x000f, 2) == 1024);
    CHECK(cfg2.le(0x0003, 8) == 0xfec00000);
}

TEST_CASE("fw_cfg: reads past the item's end return 0") {
    Cfg cfg(config());
    CHECK(cfg.item(0x0005, 6) == std::vector<std::uint8_t>{4, 0, 0, 0, 0, 0});
    CHECK(cfg.item(0x0000, 8) == std::vector<std::uint8_t>{'Q', 'E', 'M', 'U', 0, 0, 0, 0});
}

TEST_CASE("fw_cfg: selecting resets the read offset") {
    Cfg cfg(config());
    cfg.select(0x0000);
    CHECK(cfg.read(2) == bytes_of("QE"));
    cfg.select(0x0000);
    CHECK(cfg.read(4) == bytes_of("QEMU"));
    cfg.select(0x0005);
    cfg.read(1);
    cfg.select(0x0005);
    CHECK(cfg.read(1) == std::vector<std::uint8_t>{4});
}

TEST_CASE("fw_cfg: the command line and its size") {
    Cfg cfg(config("console=ttyS0 quiet"));
    CHECK(cfg.le(0x0014, 4) == 20); // strlen + 1
    std::vector<std::uint8_t> expected = bytes_of("console=ttyS0 quiet");
    expected.push_back(0);
    CHECK(cfg.item(0x0015, 20) == expected);
    CHECK(cfg.item(0x0015, 22).back() == 0);

    // Empty: size 1 and a lone NUL, as QEMU's -kernel boot gives it.
    Cfg empty(config(""));
    CHECK(empty.le(0x0014, 4) == 1);
    CHECK(empty.item(0x0015, 4) == std::vector<std::uint8_t>(4, 0));

    // A C string ends at its first NUL, as QEMU takes it.
    Cfg nul(config(std::string("ab\0cd", 5)));
    CHECK(nul.le(0x0014, 4) == 3);
    CHECK(nul.item(0x0015, 4) == std::vector<std::uint8_t>{'a', 'b', 0, 0});
}

TEST_CASE("fw_cfg: the file directory is empty and other keys read zeros") {
    Cfg cfg(config("x"));
    CHECK(cfg.item(0x0019, 4) == std::vector<std::uint8_t>(4, 0)); // big-endian count 0
    for (std::uint16_t key : {0x0004, 0x0006, 0x000e, 0x0010, 0x0018, 0x001a, 0x0020, 0x3fff, 0xffff}) {
        CAPTURE(key);
        CHECK(cfg.item(key, 8) == std::vector<std::uint8_t>(8, 0));
    }
}

TEST_CASE("fw_cfg: selector bit 14 is ignored, bit 15 selects the arch table: only the IRQ0 override") {
    Cfg cfg(config());
    CHECK(cfg.le(0x4005, 2) == 4);
    CHECK(cfg.item(0x4000, 4) == bytes_of("QEMU"));
    CHECK(cfg.item(0x8000, 4) == std::vector<std::uint8_t>(4, 0)); // ACPI tables in QEMU
    CHECK(cfg.le(0x8002, 4) == 1);                                 // ISA IRQ 0 is on GSI 2, as the MADT says
    CHECK(cfg.le(0xc002, 4) == 1);                                 // bit 14 ignored there too
    CHECK(cfg.item(0x8005, 2) == std::vector<std::uint8_t>(2, 0));
    CHECK(cfg.item(0xc005, 2) == std::vector<std::uint8_t>(2, 0));
}

TEST_CASE("fw_cfg: an 8-bit selector write selects the zero-extended byte") {
    Cfg cfg(config());
    cfg.select(0x8005); // something else first
    const std::array<std::uint8_t, 1> key{0x05};
    cfg.dev.write(0, key);
    CHECK(cfg.read(2) == std::vector<std::uint8_t>{4, 0});
    // A 32-bit write selects with its low 16 bits.
    const std::array<std::uint8_t, 4> wide{0x0f, 0x00, 0x12, 0x34};
    cfg.dev.write(0, wide);
    CHECK(cfg.read(2) == std::vector<std::uint8_t>{8, 0});
}

TEST_CASE("fw_cfg: wide data reads return successive bytes") {
    Cfg cfg(config());
    cfg.select(0x0003);
    std::array<std::uint8_t, 4> low{};
    cfg.dev.read(1, low);
    CHECK(low == std::array<std::uint8_t, 4>{0x00, 0x60, 0x45, 0x23});
    std::array<std::uint8_t, 2> mid{};
    cfg.dev.read(1, mid);
    CHECK(mid == std::array<std::uint8_t, 2>{0x01, 0x00});
    std::array<std::uint8_t, 8> tail{};
    cfg.dev.read(1, tail); // two item bytes, then zeros
    CHECK(tail == std::array<std::uint8_t, 8>{});
    cfg.select(0x0000);
    std::array<std::uint8_t, 8> sig{};
    cfg.dev.read(1, sig);
    CHECK(sig == std::array<std::uint8_t, 8>{'Q', 'E', 'M', 'U', 0, 0, 0, 0});
}

TEST_CASE("fw_cfg: data writes are ignored and the selector reads 0") {
    Cfg cfg(config());
    cfg.select(0x0000);
    cfg.read(1);
    const std::array<std::uint8_t, 1> byte{0x55};
    cfg.dev.write(1, byte); // neither selects nor changes data nor moves the offset
    const std::array<std::uint8_t, 2> word{0x05, 0x00};
    cfg.dev.write(1, word);
    std::array<std::uint8_t, 2> selector{0xaa, 0xaa};
    cfg.dev.read(0, selector); // no side effect on the offset either
    CHECK(selector == std::array<std::uint8_t, 2>{0, 0});
    CHECK(cfg.read(3) == bytes_of("EMU"));
}

TEST_CASE("fw_cfg behind the port bus at 0x510") {
    Cfg cfg(config());
    hv::Bus bus("port");
    bus.add(hv::FwCfg::port, hv::FwCfg::size, cfg.dev, "fw_cfg");
    const std::array<std::uint8_t, 2> key{0x05, 0x00};
    CHECK(bus.write(0x510, key) == hv::BusResult::Handled);
    std::array<std::uint8_t, 1> b0{}, b1{};
    CHECK(bus.read(0x511, b0) == hv::BusResult::Handled);
    CHECK(bus.read(0x511, b1) == hv::BusResult::Handled);
    CHECK(b0[0] == 4);
    CHECK(b1[0] == 0);
    CHECK_FALSE(bus.device_at(0x512).has_value());
}
