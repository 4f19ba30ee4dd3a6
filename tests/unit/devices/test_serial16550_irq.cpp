// hv::Serial16550's IRQ line (which sources raise it, OUT2 and loopback
// gating it, an edge per THR write), accesses wider than a byte, and the
// UART behind the port bus at HV_SERIAL_PORT. The registers are in
// test_serial16550.cpp.
#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "devices/bus.hpp"
#include "devices/serial16550.hpp"
#include "hv/abi.h"
#include "tests/support/serial16550_fixture.hpp"

using namespace hv::test::serial16550;

TEST_CASE("Serial16550 IRQ line follows pending interrupts, gated by OUT2") {
    Uart uart;
    uart.watch_irq();
    CHECK(uart.irq_levels.empty());

    uart.wr(IER, IER_RX);
    uart.receive("a");
    CHECK(uart.rd(IIR) == IIR_RX);
    CHECK(uart.irq_levels.empty());  // OUT2 clear: the PC's IRQ buffer is off
    CHECK_FALSE(uart.dev.irq_level());

    uart.wr(MCR, MCR_OUT2);
    CHECK(uart.irq_levels == std::vector<bool>{true});
    CHECK(uart.dev.irq_level());

    uart.rd(RBR);
    CHECK(uart.irq_levels == std::vector<bool>{true, false});

    uart.receive("b");
    CHECK(uart.irq_levels == std::vector<bool>{true, false, true});
    uart.wr(IER, 0);  // masking drops the line
    CHECK(uart.irq_levels == std::vector<bool>{true, false, true, false});
    uart.wr(IER, IER_RX);
    CHECK(uart.irq_levels == std::vector<bool>{true, false, true, false, true});
    uart.wr(MCR, 0);  // so does clearing OUT2
    CHECK(uart.irq_levels == std::vector<bool>{true, false, true, false, true, false});
}

TEST_CASE("Serial16550 IRQ line: loopback gates the output off") {
    Uart uart;
    uart.watch_irq();
    uart.wr(MCR, MCR_OUT2);
    uart.wr(IER, IER_THRE);
    CHECK(uart.irq_levels == std::vector<bool>{true});
    uart.wr(MCR, MCR_OUT2 | MCR_LOOP);
    CHECK(uart.irq_levels == std::vector<bool>{true, false});
    CHECK(uart.rd(IIR) == IIR_THRE);  // still pending inside the UART
    uart.wr(IER, 0);
    uart.wr(IER, IER_THRE);
    uart.wr(MCR, MCR_OUT2);
    CHECK(uart.irq_levels == std::vector<bool>{true, false, true});
}

TEST_CASE("Serial16550 IRQ line: THRE gives an edge for every THR write") {
    Uart uart;
    uart.watch_irq();
    uart.wr(MCR, MCR_OUT2);
    uart.wr(IER, IER_THRE);
    CHECK(uart.irq_levels == std::vector<bool>{true});
    CHECK(uart.rd(IIR) == IIR_THRE);
    CHECK(uart.irq_levels == std::vector<bool>{true, false});
    uart.put("a");
    CHECK(uart.irq_levels == std::vector<bool>{true, false, true});
    // Writing again while the interrupt is still pending drops and raises
    // the line, so an edge-triggered PIC sees a new interrupt.
    uart.put("b");
    CHECK(uart.irq_levels == std::vector<bool>{true, false, true, false, true});
}

TEST_CASE("Serial16550 IRQ line: line status and modem status sources") {
    Uart uart;
    uart.watch_irq();
    uart.wr(MCR, MCR_OUT2);
    uart.wr(IER, IER_LINE);
    uart.receive("12");  // overrun
    CHECK(uart.irq_levels == std::vector<bool>{true});
    CHECK(uart.rd(IIR) == IIR_LINE);
    uart.rd(LSR);
    CHECK(uart.irq_levels == std::vector<bool>{true, false});

    // Outside loopback the modem inputs are fixed, so MCR writes change nothing.
    uart.wr(IER, IER_MODEM);
    uart.wr(MCR, MCR_OUT2 | MCR_DTR);
    CHECK(uart.irq_levels == std::vector<bool>{true, false});
    CHECK(uart.rd(IIR) == IIR_NONE);
    // A round trip through loopback changes CTS/DSR; the delta stays latched
    // (gated off while in loopback) and raises the line once it is left.
    uart.wr(MCR, MCR_OUT2 | MCR_LOOP);
    CHECK(uart.irq_levels == std::vector<bool>{true, false});
    uart.wr(MCR, MCR_OUT2);
    CHECK(uart.irq_levels == std::vector<bool>{true, false, true});
    CHECK(uart.rd(IIR) == IIR_MODEM);
    CHECK(uart.rd(MSR) == (MSR_CTS | MSR_DSR | MSR_DCD | MSR_DCTS | MSR_DDSR));
    CHECK(uart.irq_levels == std::vector<bool>{true, false, true, false});
}

TEST_CASE("Serial16550 set_irq_line reports an already asserted line at once") {
    Uart uart;
    uart.wr(MCR, MCR_OUT2);
    uart.wr(IER, IER_THRE);
    CHECK(uart.dev.irq_level());
    uart.watch_irq();
    CHECK(uart.irq_levels == std::vector<bool>{true});
}

TEST_CASE("Serial16550 splits wide accesses into byte registers") {
    Uart uart;
    uart.wr(LCR, LCR_DLAB);
    const std::array<uint8_t, 2> divisor{0x34, 0x12};
    uart.dev.write(DLL, divisor);
    CHECK(uart.rd(DLL) == 0x34);
    CHECK(uart.rd(DLM) == 0x12);

    std::array<uint8_t, 4> data{};
    uart.dev.read(LSR, data);  // LSR, MSR, SCR, then past the end
    CHECK(data[0] == (LSR_THRE | LSR_TEMT));
    CHECK(data[1] == (MSR_CTS | MSR_DSR | MSR_DCD));
    CHECK(data[2] == 0);
    CHECK(data[3] == 0xff);
}

TEST_CASE("Serial16550 works behind the port bus at HV_SERIAL_PORT") {
    Uart uart;
    hv::Bus bus("port");
    bus.add(HV_SERIAL_PORT, hv::Serial16550::size, uart.dev, "serial");
    const std::array<uint8_t, 1> h{'h'};
    const std::array<uint8_t, 1> nl{'\n'};
    CHECK(bus.write(HV_SERIAL_PORT, h) == hv::BusResult::Handled);
    CHECK(bus.write(HV_SERIAL_PORT, nl) == hv::BusResult::Handled);
    CHECK(uart.output() == "h\n");
    std::array<uint8_t, 1> lsr{};
    CHECK(bus.read(HV_SERIAL_PORT + 5, lsr) == hv::BusResult::Handled);
    CHECK(lsr[0] == (LSR_THRE | LSR_TEMT));
    CHECK(bus.device_at(HV_SERIAL_PORT + 7) == "serial");
    CHECK_FALSE(bus.device_at(HV_SERIAL_PORT + 8).has_value());
}
