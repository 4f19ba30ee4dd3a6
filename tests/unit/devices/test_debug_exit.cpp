#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <vector>

#include "devices/bus.hpp"
#include "devices/debug_exit.hpp"
#include "hv/abi.h"

namespace {

struct Exits {
    std::vector<uint32_t> values;
    hv::DebugExit dev{[this](uint32_t value) { values.push_back(value); }};
};

}  // namespace

TEST_CASE("DebugExit: a 1-byte write reports the byte") {
    Exits exits;
    const std::array<uint8_t, 1> value{0x2a};
    exits.dev.write(0, value);
    CHECK(exits.values == std::vector<uint32_t>{0x2a});
    const std::array<uint8_t, 1> high{0xff};
    exits.dev.write(0, high);
    CHECK(exits.values == std::vector<uint32_t>{0x2a, 0xff});  // zero-, not sign-extended
}

TEST_CASE("DebugExit: a 2-byte write reports a little-endian word") {
    Exits exits;
    const std::array<uint8_t, 2> value{0x34, 0x12};
    exits.dev.write(0, value);
    CHECK(exits.values == std::vector<uint32_t>{0x1234});
    const std::array<uint8_t, 2> high{0x00, 0x80};
    exits.dev.write(0, high);
    CHECK(exits.values == std::vector<uint32_t>{0x1234, 0x8000});
}

TEST_CASE("DebugExit: a 4-byte write reports a little-endian dword") {
    Exits exits;
    const std::array<uint8_t, 4> value{0x78, 0x56, 0x34, 0x12};
    exits.dev.write(0, value);
    const std::array<uint8_t, 4> ones{0xff, 0xff, 0xff, 0xff};
    exits.dev.write(0, ones);
    CHECK(exits.values == std::vector<uint32_t>{0x12345678, 0xffffffff});
}

TEST_CASE("DebugExit ignores other widths and offsets") {
    Exits exits;
    const std::array<uint8_t, 8> eight{1, 0, 0, 0, 0, 0, 0, 0};
    exits.dev.write(0, eight);
    const std::array<uint8_t, 3> three{1, 0, 0};
    exits.dev.write(0, three);
    const std::array<uint8_t, 1> one{1};
    exits.dev.write(1, one);
    CHECK(exits.values.empty());
}

TEST_CASE("DebugExit reads return all ones") {
    Exits exits;
    std::array<uint8_t, 4> data{0, 0, 0, 0};
    exits.dev.read(0, data);
    CHECK(data == std::array<uint8_t, 4>{0xff, 0xff, 0xff, 0xff});
    CHECK(exits.values.empty());
}

TEST_CASE("DebugExit behind the port bus at HV_DEBUG_EXIT_PORT") {
    Exits exits;
    hv::Bus bus("port");
    bus.add(HV_DEBUG_EXIT_PORT, hv::DebugExit::size, exits.dev, "debug-exit");
    // outl to the 1-byte port still reaches the device with all four bytes.
    const std::array<uint8_t, 4> value{0x03, 0x00, 0x01, 0x00};
    CHECK(bus.write(HV_DEBUG_EXIT_PORT, value) == hv::BusResult::Handled);
    CHECK(exits.values == std::vector<uint32_t>{0x10003});
    CHECK_FALSE(bus.device_at(HV_DEBUG_EXIT_PORT + 1).has_value());
}
