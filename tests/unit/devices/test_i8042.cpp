#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <utility>
#include <vector>

#include "devices/bus.hpp"
#include "devices/i8042.hpp"

namespace {

// Status bits and commands as a guest driver sees them.
constexpr uint8_t STR_OBF = 0x01, STR_IBF = 0x02, STR_SYS = 0x04, STR_CMD = 0x08,
                  STR_UNLOCKED = 0x10, STR_AUX = 0x20, STR_TIMEOUT = 0x40;
constexpr uint8_t CTR_KBDINT = 0x01, CTR_AUXINT = 0x02, CTR_SYS = 0x04, CTR_KBDDIS = 0x10,
                  CTR_AUXDIS = 0x20, CTR_XLATE = 0x40;

enum class Line { Irq1, Irq12 };

struct Controller {
    int resets = 0;
    std::vector<std::pair<Line, bool>> irq_events;  // one per level change, in order
    hv::I8042 dev{[this] { ++resets; },
                  [this](bool level) { irq_events.emplace_back(Line::Irq1, level); },
                  [this](bool level) { irq_events.emplace_back(Line::Irq12, level); }};

    uint8_t status() {
        std::array<uint8_t, 1> byte{0};
        dev.command_port().read(0, byte);
        return byte[0];
    }
    uint8_t read_data() {
        std::array<uint8_t, 1> byte{0};
        dev.data_port().read(0, byte);
        return byte[0];
    }
    void command(uint8_t value) {
        const std::array<uint8_t, 1> byte{value};
        dev.command_port().write(0, byte);
    }
    void write_data(uint8_t value) {
        const std::array<uint8_t, 1> byte{value};
        dev.data_port().write(0, byte);
    }
    // Reads the output buffer until OBF clears, as Linux's i8042_flush does.
    std::vector<uint8_t> drain() {
        std::vector<uint8_t> bytes;
        while ((status() & STR_OBF) && bytes.size() < 64) {
            bytes.push_back(read_data());
        }
        return bytes;
    }
    uint8_t read_config() {
        command(0x20);
        REQUIRE((status() & STR_OBF) != 0);
        return read_data();
    }
    void write_config(uint8_t value) {
        command(0x60);
        write_data(value);
    }
};

using Bytes = std::vector<uint8_t>;

}  // namespace

TEST_CASE("I8042 power-on state: empty buffer and system flag set") {
    Controller kbc;
    CHECK(kbc.status() == (STR_SYS | STR_UNLOCKED));
    CHECK(kbc.read_config() == hv::I8042::power_on_config);
    CHECK(hv::I8042::power_on_config == (CTR_KBDINT | CTR_SYS | CTR_AUXDIS | CTR_XLATE));
    kbc.command(0xd0);
    CHECK(kbc.drain() == Bytes{hv::I8042::power_on_output_port});
    CHECK(kbc.resets == 0);
    // Keyboard interrupts are on: IRQ1 rose and fell around each reply.
    CHECK(kbc.irq_events == std::vector<std::pair<Line, bool>>{{Line::Irq1, true},
                                                                {Line::Irq1, false},
                                                                {Line::Irq1, true},
                                                                {Line::Irq1, false}});
}

TEST_CASE("I8042 command 0xFE pulses the reset line") {
    Controller kbc;
    kbc.command(0xfe);
    CHECK(kbc.resets == 1);
    // Linux's reboot=k repeats the command until the machine resets.
    kbc.command(0xfe);
    CHECK(kbc.resets == 2);
    CHECK(kbc.drain().empty());  // no reply
}

TEST_CASE("I8042 commands 0xF0-0xFF reset exactly when bit 0 is clear") {
    for (unsigned command = 0xf0; command <= 0xff; ++command) {
        CAPTURE(command);
        Controller kbc;
        kbc.command(static_cast<uint8_t>(command));
        CHECK(kbc.resets == ((command & 1) == 0 ? 1 : 0));
    }
}

TEST_CASE("I8042 output port write 0xD1 resets only with bit 0 clear") {
    Controller kbc;
    kbc.command(0xd1);
    kbc.write_data(0x03);  // reset released, A20 on: what A20 gate code writes
    CHECK(kbc.resets == 0);
    kbc.command(0xd0);
    CHECK(kbc.drain() == Bytes{0x03});

    kbc.command(0xd1);
    kbc.write_data(0x01);  // A20 off: stored, still no reset
    CHECK(kbc.resets == 0);
    kbc.command(0xd0);
    CHECK(kbc.drain() == Bytes{0x01});

    kbc.command(0xd1);
    kbc.write_data(0x02);  // reset asserted
    CHECK(kbc.resets == 1);
    kbc.command(0xd0);
    CHECK(kbc.drain() == Bytes{0x03});  // the reset line reads back released

    // The parameter was consumed: the next data byte goes to the keyboard.
    kbc.write_data(0x00);
    CHECK(kbc.resets == 1);
    CHECK(kbc.drain() == Bytes{0xfa});
}

TEST_CASE("I8042 a new command abandons one waiting for its parameter") {
    Controller kbc;
    kbc.command(0xd1);
    kbc.command(0x20);
    CHECK(kbc.drain() == Bytes{hv::I8042::power_on_config});
    kbc.write_data(0x00);  // would reset if it reached the output port
    CHECK(kbc.resets == 0);
    CHECK(kbc.drain() == Bytes{0xfa});  // the keyboard acknowledged it instead
}

TEST_CASE("I8042 self test replies 0x55 and sets the system flag") {
    Controller kbc;
    kbc.write_config(0x00);
    CHECK((kbc.status() & STR_SYS) == 0);  // the status bit mirrors the config bit

    kbc.command(0xaa);
    CHECK(kbc.drain() == Bytes{0x55});
    CHECK((kbc.status() & STR_SYS) != 0);
    CHECK(kbc.read_config() == CTR_SYS);
}

TEST_CASE("I8042 configuration byte round trip") {
    Controller kbc;
    for (uint8_t value : {uint8_t{0x47}, uint8_t{0x00}, uint8_t{0x56}, uint8_t{0x65}}) {
        CAPTURE(value);
        kbc.write_config(value);
        CHECK(kbc.read_config() == value);
        CHECK(kbc.drain().empty());
    }
}

TEST_CASE("I8042 status bit 3 tells whether the last write was a command") {
    Controller kbc;
    kbc.command(0xad);
    CHECK((kbc.status() & STR_CMD) != 0);
    kbc.write_data(0xf4);
    CHECK((kbc.status() & STR_CMD) == 0);
    CHECK((kbc.status() & STR_IBF) == 0);  // never busy
}

TEST_CASE("I8042 interface tests and the port enable commands") {
    Controller kbc;
    kbc.command(0xa9);
    CHECK(kbc.drain() == Bytes{0x00});
    kbc.command(0xab);
    CHECK(kbc.drain() == Bytes{0x00});

    kbc.write_config(0x00);
    kbc.command(0xa7);
    CHECK(kbc.read_config() == CTR_AUXDIS);
    kbc.command(0xad);
    CHECK(kbc.read_config() == (CTR_AUXDIS | CTR_KBDDIS));
    kbc.command(0xa8);
    CHECK(kbc.read_config() == CTR_KBDDIS);
    kbc.command(0xae);
    CHECK(kbc.read_config() == 0x00);
}

TEST_CASE("I8042 keyboard answers reset and identify in order") {
    Controller kbc;
    kbc.write_data(0xff);
    kbc.write_data(0xf2);
    CHECK(kbc.drain() == Bytes{0xfa, 0xaa, 0xfa, 0xab, 0x83});
    CHECK(kbc.status() == (STR_SYS | STR_UNLOCKED));  // keyboard bytes never set the aux bit
}

TEST_CASE("I8042 keyboard echo and commands with a parameter") {
    Controller kbc;
    kbc.write_data(0xee);
    CHECK(kbc.drain() == Bytes{0xee});

    kbc.write_data(0xed);  // set LEDs
    CHECK(kbc.drain() == Bytes{0xfa});
    kbc.write_data(0x07);
    CHECK(kbc.drain() == Bytes{0xfa});

    kbc.write_data(0xf3);  // typematic rate: the parameter 0xff is not a reset
    kbc.write_data(0xff);
    CHECK(kbc.drain() == Bytes{0xfa, 0xfa});

    kbc.write_data(0xf0);  // select scancode set 3, then ask which is selected
    kbc.write_data(0x03);
    kbc.write_data(0xf0);
    kbc.write_data(0x00);
    CHECK(kbc.drain() == Bytes{0xfa, 0xfa, 0xfa, 0xfa, 0x03});

    kbc.write_data(0xff);  // reset returns to set 2
    kbc.write_data(0xf0);
    kbc.write_data(0x00);
    CHECK(kbc.drain() == Bytes{0xfa, 0xaa, 0xfa, 0xfa, 0x02});

    kbc.write_data(0xf4);  // enable scanning: just acknowledged
    kbc.write_data(0xf5);
    CHECK(kbc.drain() == Bytes{0xfa, 0xfa});
}

TEST_CASE("I8042 reading an empty buffer returns the last byte") {
    Controller kbc;
    CHECK(kbc.read_data() == 0x00);  // nothing ever queued
    kbc.write_data(0xff);
    CHECK(kbc.read_data() == 0xfa);
    CHECK(kbc.read_data() == 0xaa);
    CHECK((kbc.status() & STR_OBF) == 0);
    CHECK(kbc.read_data() == 0xaa);
    CHECK(kbc.read_data() == 0xaa);
    CHECK((kbc.status() & STR_OBF) == 0);
}

TEST_CASE("I8042 0xD2 and 0xD3 place a byte as keyboard or aux data") {
    Controller kbc;
    kbc.command(0xd2);
    kbc.write_data(0x5a);
    CHECK(kbc.status() == (STR_OBF | STR_SYS | STR_UNLOCKED));
    CHECK(kbc.read_data() == 0x5a);

    // Linux's AUX loopback probe.
    kbc.command(0xd3);
    kbc.write_data(0xa5);
    CHECK(kbc.status() == (STR_OBF | STR_SYS | STR_UNLOCKED | STR_AUX));
    CHECK(kbc.read_data() == 0xa5);
    CHECK(kbc.status() == (STR_SYS | STR_UNLOCKED));
}

TEST_CASE("I8042 bytes sent to the absent mouse time out with 0xFE") {
    Controller kbc;
    kbc.write_config(0x47);  // both IRQs on, as Linux runs it
    kbc.irq_events.clear();
    kbc.command(0xd4);
    kbc.write_data(0xf2);  // psmouse's GET ID
    CHECK(kbc.status() == (STR_OBF | STR_SYS | STR_UNLOCKED | STR_AUX | STR_TIMEOUT));
    CHECK(kbc.irq_events == std::vector<std::pair<Line, bool>>{{Line::Irq12, true}});
    CHECK(kbc.read_data() == 0xfe);
    CHECK(kbc.status() == (STR_SYS | STR_UNLOCKED));  // the timeout left with its byte
    CHECK(kbc.irq_events.back() == std::pair<Line, bool>{Line::Irq12, false});
    CHECK(kbc.drain().empty());
}

TEST_CASE("I8042 IRQ1 follows keyboard data and config bit 0") {
    Controller kbc;
    kbc.write_config(CTR_XLATE);  // no interrupts
    kbc.command(0xd2);
    kbc.write_data(0x11);
    CHECK(kbc.irq_events.empty());
    CHECK_FALSE(kbc.dev.keyboard_irq_level());

    kbc.write_config(CTR_XLATE | CTR_KBDINT);  // pending data raises the line at once
    CHECK(kbc.dev.keyboard_irq_level());
    CHECK(kbc.irq_events == std::vector<std::pair<Line, bool>>{{Line::Irq1, true}});
    CHECK(kbc.read_data() == 0x11);
    CHECK_FALSE(kbc.dev.keyboard_irq_level());

    // Several bytes: one rising edge per byte, so an edge-triggered PIC
    // delivers every one.
    kbc.irq_events.clear();
    kbc.write_data(0xf2);
    CHECK(kbc.read_data() == 0xfa);
    CHECK(kbc.read_data() == 0xab);
    CHECK(kbc.read_data() == 0x83);
    CHECK(kbc.irq_events == std::vector<std::pair<Line, bool>>{{Line::Irq1, true},
                                                                {Line::Irq1, false},
                                                                {Line::Irq1, true},
                                                                {Line::Irq1, false},
                                                                {Line::Irq1, true},
                                                                {Line::Irq1, false}});
    CHECK_FALSE(kbc.dev.aux_irq_level());
}

TEST_CASE("I8042 IRQ12 follows aux data and config bit 1") {
    Controller kbc;
    kbc.write_config(CTR_KBDINT);  // keyboard IRQ on, aux IRQ off
    kbc.command(0xd3);
    kbc.write_data(0x5a);
    CHECK(kbc.irq_events.empty());  // aux data never raises IRQ1

    kbc.write_config(CTR_KBDINT | CTR_AUXINT);
    CHECK(kbc.dev.aux_irq_level());
    CHECK_FALSE(kbc.dev.keyboard_irq_level());

    // Clearing the enable bit drops the line even with the data unread.
    kbc.write_config(CTR_KBDINT);
    CHECK_FALSE(kbc.dev.aux_irq_level());
    kbc.write_config(CTR_KBDINT | CTR_AUXINT);

    // An aux byte followed by a keyboard byte hands over from IRQ12 to IRQ1.
    kbc.command(0xd2);
    kbc.write_data(0x33);
    kbc.irq_events.clear();
    CHECK(kbc.read_data() == 0x5a);
    CHECK(kbc.irq_events == std::vector<std::pair<Line, bool>>{{Line::Irq12, false},
                                                                {Line::Irq1, true}});
    CHECK(kbc.read_data() == 0x33);
    CHECK_FALSE(kbc.dev.keyboard_irq_level());
    CHECK_FALSE(kbc.dev.aux_irq_level());
}

TEST_CASE("I8042 ignores unknown commands") {
    Controller kbc;
    for (uint8_t command : {uint8_t{0x00}, uint8_t{0x21}, uint8_t{0xa4}, uint8_t{0xc0},
                            uint8_t{0xe0}}) {
        kbc.command(command);
    }
    CHECK(kbc.drain().empty());
    CHECK(kbc.resets == 0);
    CHECK(kbc.read_config() == hv::I8042::power_on_config);
}

TEST_CASE("I8042 output queue is bounded") {
    Controller kbc;
    for (int i = 0; i < 20; ++i) {
        kbc.command(0xd2);
        kbc.write_data(static_cast<uint8_t>(i));
    }
    const Bytes bytes = kbc.drain();
    REQUIRE(bytes.size() == hv::I8042::output_queue_depth);
    CHECK(bytes.front() == 0);
    CHECK(bytes.back() == hv::I8042::output_queue_depth - 1);  // later bytes were dropped
}

TEST_CASE("I8042 behind the port bus at 0x60 and 0x64") {
    Controller kbc;
    hv::Bus bus("port");
    bus.add(hv::I8042::data_port_address, hv::I8042::port_size, kbc.dev.data_port(), "i8042-data");
    bus.add(hv::I8042::command_port_address, hv::I8042::port_size, kbc.dev.command_port(),
            "i8042-command");
    CHECK_FALSE(bus.device_at(0x61).has_value());  // left for the PIT speaker port

    const std::array<uint8_t, 1> self_test{0xaa};
    CHECK(bus.write(0x64, self_test) == hv::BusResult::Handled);
    std::array<uint8_t, 1> status{0};
    CHECK(bus.read(0x64, status) == hv::BusResult::Handled);
    CHECK((status[0] & STR_OBF) != 0);

    // A word read at 0x60 gets the data byte; the byte from 0x61 is not ours.
    std::array<uint8_t, 2> word{0, 0};
    CHECK(bus.read(0x60, word) == hv::BusResult::Handled);
    CHECK(word == std::array<uint8_t, 2>{0x55, 0xff});

    // A wider write uses its first byte only.
    const std::array<uint8_t, 4> reset{0xfe, 0x00, 0x00, 0x00};
    CHECK(bus.write(0x64, reset) == hv::BusResult::Handled);
    CHECK(kbc.resets == 1);
}

TEST_CASE("I8042 facades ignore offsets past their one byte") {
    Controller kbc;
    const std::array<uint8_t, 1> reset{0xfe};
    kbc.dev.command_port().write(1, reset);
    CHECK(kbc.resets == 0);
    std::array<uint8_t, 2> bytes{0, 0};
    kbc.dev.command_port().read(1, bytes);
    CHECK(bytes == std::array<uint8_t, 2>{0xff, 0xff});
}
