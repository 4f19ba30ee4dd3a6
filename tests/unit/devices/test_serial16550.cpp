#include <doctest/doctest.h>

#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "devices/bus.hpp"
#include "devices/serial16550.hpp"
#include "hv/abi.h"

namespace {

// Register offsets and bits as the guest driver sees them.
constexpr uint64_t RBR = 0, THR = 0, DLL = 0, IER = 1, DLM = 1, IIR = 2, FCR = 2, LCR = 3,
                   MCR = 4, LSR = 5, MSR = 6, SCR = 7;
constexpr uint8_t LCR_DLAB = 0x80;
constexpr uint8_t MCR_DTR = 0x01, MCR_RTS = 0x02, MCR_OUT1 = 0x04, MCR_OUT2 = 0x08,
                  MCR_LOOP = 0x10;
constexpr uint8_t IER_RX = 0x01, IER_THRE = 0x02, IER_LINE = 0x04, IER_MODEM = 0x08;
constexpr uint8_t IIR_NONE = 0x01, IIR_LINE = 0x06, IIR_RX = 0x04, IIR_TIMEOUT = 0x0c,
                  IIR_THRE = 0x02, IIR_MODEM = 0x00, IIR_FIFO = 0xc0;
constexpr uint8_t LSR_DR = 0x01, LSR_OE = 0x02, LSR_THRE = 0x20, LSR_TEMT = 0x40;
constexpr uint8_t MSR_DCTS = 0x01, MSR_DDSR = 0x02, MSR_TERI = 0x04, MSR_DDCD = 0x08,
                  MSR_CTS = 0x10, MSR_DSR = 0x20, MSR_RI = 0x40, MSR_DCD = 0x80;

struct Uart {
    std::vector<std::string> chunks;  // one per sink call
    std::vector<bool> irq_levels;     // one per level change
    hv::Serial16550 dev{[this](std::span<const uint8_t> bytes) {
        chunks.emplace_back(bytes.begin(), bytes.end());
    }};

    uint8_t rd(uint64_t offset) {
        std::array<uint8_t, 1> byte{0};
        dev.read(offset, byte);
        return byte[0];
    }
    void wr(uint64_t offset, uint8_t value) {
        const std::array<uint8_t, 1> byte{value};
        dev.write(offset, byte);
    }
    void put(const std::string& text) {
        for (char c : text) {
            wr(THR, static_cast<uint8_t>(c));
        }
    }
    void receive(const std::string& text) {
        const std::vector<uint8_t> bytes(text.begin(), text.end());
        dev.receive(bytes);
    }
    std::string output() const {
        std::string all;
        for (const auto& chunk : chunks) {
            all += chunk;
        }
        return all;
    }
    void watch_irq() {
        dev.set_irq_line([this](bool level) { irq_levels.push_back(level); });
    }
};

}  // namespace

TEST_CASE("Serial16550 sends THR writes to the sink, flushing at newline and on flush()") {
    Uart uart;
    uart.put("hello");
    CHECK(uart.chunks.empty());  // buffered until a newline
    uart.put(", world\n");
    REQUIRE(uart.chunks.size() == 1);
    CHECK(uart.chunks[0] == "hello, world\n");

    uart.put("no newline");
    CHECK(uart.chunks.size() == 1);
    uart.dev.flush();
    REQUIRE(uart.chunks.size() == 2);
    CHECK(uart.chunks[1] == "no newline");
    uart.dev.flush();  // nothing pending: no empty chunk
    CHECK(uart.chunks.size() == 2);

    // A long line without newline does not accumulate without bound.
    uart.put(std::string(hv::Serial16550::output_buffer_limit, 'x'));
    REQUIRE(uart.chunks.size() == 3);
    CHECK(uart.chunks[2] == std::string(hv::Serial16550::output_buffer_limit, 'x'));
    // Bytes are passed through unchanged, including NUL and 0xff.
    uart.wr(THR, 0x00);
    uart.wr(THR, 0xff);
    uart.dev.flush();
    CHECK(uart.chunks.back() == std::string("\0\xff", 2));
}

TEST_CASE("Serial16550 DLAB switches offsets 0 and 1 to the divisor latch") {
    Uart uart;
    uart.wr(IER, 0x05);
    uart.wr(LCR, LCR_DLAB | 0x03);
    CHECK(uart.rd(LCR) == (LCR_DLAB | 0x03));
    uart.wr(DLL, 0x0c);
    uart.wr(DLM, 0x01);
    CHECK(uart.rd(DLL) == 0x0c);
    CHECK(uart.rd(DLM) == 0x01);
    CHECK(uart.chunks.empty());  // the DLL write was not transmitted
    uart.dev.flush();
    CHECK(uart.chunks.empty());

    uart.wr(LCR, 0x03);  // 8N1, DLAB off
    CHECK(uart.rd(IER) == 0x05);  // IER was not overwritten by DLM
    uart.put("A");
    uart.dev.flush();
    CHECK(uart.output() == "A");

    // The divisor survives and reads back again under DLAB.
    uart.wr(LCR, LCR_DLAB);
    CHECK(uart.rd(DLL) == 0x0c);
    CHECK(uart.rd(DLM) == 0x01);
}

TEST_CASE("Serial16550 divisor is nonzero after reset") {
    // Guests compute the baud rate as clock / (16 * divisor).
    Uart uart;
    uart.wr(LCR, LCR_DLAB);
    CHECK((uart.rd(DLL) | (uart.rd(DLM) << 8)) != 0);
}

TEST_CASE("Serial16550 IER keeps only its four low bits") {
    Uart uart;
    CHECK(uart.rd(IER) == 0);
    uart.wr(IER, 0xff);
    CHECK(uart.rd(IER) == 0x0f);
    uart.wr(IER, 0x40);  // XScale's UUE bit: Linux probes it and must read 0
    CHECK(uart.rd(IER) == 0x00);
}

TEST_CASE("Serial16550 IIR reports the highest priority interrupt") {
    Uart uart;
    CHECK(uart.rd(IIR) == IIR_NONE);

    // Raise every source: an overrun (16450 mode holds one byte), received
    // data, THR empty (raised by enabling it) and a modem status change
    // (entering loopback drops CTS, DSR and DCD).
    uart.receive("ab");
    uart.wr(MCR, MCR_LOOP);
    uart.wr(IER, IER_RX | IER_THRE | IER_LINE | IER_MODEM);

    CHECK(uart.rd(IIR) == IIR_LINE);
    CHECK(uart.rd(IIR) == IIR_LINE);  // reading IIR does not clear it
    CHECK(uart.rd(LSR) == (LSR_DR | LSR_OE | LSR_THRE | LSR_TEMT));
    CHECK(uart.rd(IIR) == IIR_RX);
    CHECK(uart.rd(RBR) == 'b');  // 16450 mode: the newer byte overwrote the older
    CHECK(uart.rd(IIR) == IIR_THRE);
    CHECK(uart.rd(IIR) == IIR_MODEM);  // reading IIR cleared THRE
    CHECK(uart.rd(MSR) == (MSR_DCTS | MSR_DDSR | MSR_DDCD));
    CHECK(uart.rd(IIR) == IIR_NONE);
}

TEST_CASE("Serial16550 IIR masks sources disabled in IER") {
    Uart uart;
    uart.receive("x");
    CHECK(uart.rd(IIR) == IIR_NONE);
    uart.wr(IER, IER_RX);
    CHECK(uart.rd(IIR) == IIR_RX);
    uart.wr(IER, 0);
    CHECK(uart.rd(IIR) == IIR_NONE);
}

TEST_CASE("Serial16550 THRE interrupt: raised on enable and on THR write, cleared by IIR read") {
    Uart uart;
    uart.wr(IER, IER_THRE);
    CHECK(uart.rd(IIR) == IIR_THRE);
    CHECK(uart.rd(IIR) == IIR_NONE);  // acknowledged by the previous read

    uart.put("z");  // THR empties again at once
    CHECK(uart.rd(IIR) == IIR_THRE);
    CHECK(uart.rd(IIR) == IIR_NONE);

    // Linux's UART_BUG_THRE probe: re-enabling the interrupt re-raises it.
    uart.wr(IER, IER_THRE);  // already enabled: no edge, nothing new
    CHECK(uart.rd(IIR) == IIR_NONE);
    uart.wr(IER, 0);
    uart.wr(IER, IER_THRE);
    CHECK(uart.rd(IIR) == IIR_THRE);

    // A higher priority source hides THRE, and reading IIR then leaves it pending.
    uart.wr(IER, 0);
    uart.wr(IER, IER_THRE | IER_RX);
    uart.receive("r");
    CHECK(uart.rd(IIR) == IIR_RX);
    CHECK(uart.rd(RBR) == 'r');
    CHECK(uart.rd(IIR) == IIR_THRE);
    CHECK(uart.rd(IIR) == IIR_NONE);
}

TEST_CASE("Serial16550 FCR enables the FIFO, visible in IIR bits 6-7") {
    Uart uart;
    CHECK((uart.rd(IIR) & IIR_FIFO) == 0);
    uart.wr(FCR, 0x01);
    CHECK(uart.rd(IIR) == (IIR_FIFO | IIR_NONE));  // offset 2 reads IIR, not FCR
    // Still IIR under DLAB and under Linux's EFR probe value (LCR = 0xbf):
    // a 16550 has no EFR.
    uart.wr(LCR, 0xbf);
    CHECK(uart.rd(IIR) == (IIR_FIFO | IIR_NONE));
    uart.wr(LCR, 0x03);
    uart.wr(FCR, 0x00);
    CHECK(uart.rd(IIR) == IIR_NONE);
}

TEST_CASE("Serial16550 LSR reports data ready, overrun and an always empty transmitter") {
    Uart uart;
    CHECK(uart.rd(LSR) == (LSR_THRE | LSR_TEMT));
    uart.put("out");
    CHECK(uart.rd(LSR) == (LSR_THRE | LSR_TEMT));  // output is immediate

    uart.receive("1");
    CHECK(uart.rd(LSR) == (LSR_DR | LSR_THRE | LSR_TEMT));
    CHECK(uart.rd(LSR) == (LSR_DR | LSR_THRE | LSR_TEMT));  // DR is not cleared by reading LSR
    uart.receive("2");  // 16450 mode: overrun
    CHECK(uart.rd(LSR) == (LSR_DR | LSR_OE | LSR_THRE | LSR_TEMT));
    CHECK(uart.rd(LSR) == (LSR_DR | LSR_THRE | LSR_TEMT));  // OE cleared by the read
    CHECK(uart.rd(RBR) == '2');
    CHECK(uart.rd(LSR) == (LSR_THRE | LSR_TEMT));
    uart.wr(LSR, 0xff);  // read-only
    CHECK(uart.rd(LSR) == (LSR_THRE | LSR_TEMT));
}

TEST_CASE("Serial16550 RX FIFO holds 16 bytes and sets OE on overflow") {
    Uart uart;
    uart.wr(FCR, 0x07);  // enable, clear both
    CHECK(uart.dev.rx_free() == 16);
    uart.receive("0123456789abcdefXYZ");
    CHECK(uart.dev.rx_free() == 0);
    CHECK(uart.rd(LSR) == (LSR_DR | LSR_OE | LSR_THRE | LSR_TEMT));
    std::string got;
    while (uart.rd(LSR) & LSR_DR) {
        got += static_cast<char>(uart.rd(RBR));
    }
    CHECK(got == "0123456789abcdef");  // the bytes arriving at a full FIFO are lost
    CHECK(uart.dev.rx_free() == 16);
    // Reading an empty RBR returns the last byte again, as the hardware does.
    CHECK(uart.rd(RBR) == 'f');

    uart.receive("abc");
    CHECK(uart.dev.rx_free() == 13);
    uart.wr(FCR, 0x03);  // clear RX FIFO
    CHECK((uart.rd(LSR) & LSR_DR) == 0);
    CHECK(uart.dev.rx_free() == 16);

    // Leaving FIFO mode empties the FIFO and shrinks it to one byte.
    uart.receive("abc");
    uart.wr(FCR, 0x00);
    CHECK((uart.rd(LSR) & LSR_DR) == 0);
    CHECK(uart.dev.rx_free() == 1);
}

TEST_CASE("Serial16550 FIFO trigger level picks RX data vs character timeout in IIR") {
    Uart uart;
    uart.wr(FCR, 0x81);  // enable, trigger at 8 bytes
    uart.wr(IER, IER_RX);
    uart.receive("abc");
    CHECK(uart.rd(IIR) == (IIR_FIFO | IIR_TIMEOUT));
    uart.receive("defgh");
    CHECK(uart.rd(IIR) == (IIR_FIFO | IIR_RX));
    uart.rd(RBR);
    CHECK(uart.rd(IIR) == (IIR_FIFO | IIR_TIMEOUT));
}

TEST_CASE("Serial16550 SCR is a plain scratch register") {
    Uart uart;
    uart.wr(SCR, 0xa5);
    CHECK(uart.rd(SCR) == 0xa5);
    uart.wr(SCR, 0x5a);
    CHECK(uart.rd(SCR) == 0x5a);
    uart.wr(LCR, LCR_DLAB);  // not affected by DLAB
    CHECK(uart.rd(SCR) == 0x5a);
}

TEST_CASE("Serial16550 MSR reports CTS, DSR and DCD when not in loopback") {
    Uart uart;
    CHECK(uart.rd(MSR) == (MSR_CTS | MSR_DSR | MSR_DCD));
    uart.wr(MCR, MCR_DTR | MCR_RTS | MCR_OUT2);  // outputs do not matter outside loopback
    CHECK(uart.rd(MCR) == (MCR_DTR | MCR_RTS | MCR_OUT2));
    CHECK(uart.rd(MSR) == (MSR_CTS | MSR_DSR | MSR_DCD));
    uart.wr(MCR, 0xff);
    CHECK(uart.rd(MCR) == 0x1f);  // only five bits exist
}

TEST_CASE("Serial16550 loopback wires TX to RX and MCR to MSR") {
    Uart uart;
    // Linux's 8250 probe: with loopback and RTS|OUT2, MSR's top nibble is CTS|DCD.
    uart.wr(MCR, MCR_LOOP | MCR_RTS | MCR_OUT2);
    CHECK((uart.rd(MSR) & 0xf0) == (MSR_CTS | MSR_DCD));

    uart.wr(MCR, MCR_LOOP | MCR_DTR | MCR_OUT1);
    CHECK(uart.rd(MSR) == (MSR_DSR | MSR_RI | MSR_DCTS | MSR_DDSR | MSR_DDCD));
    CHECK(uart.rd(MSR) == (MSR_DSR | MSR_RI));  // deltas cleared by the read
    uart.wr(MCR, MCR_LOOP | MCR_DTR);  // RI falls: trailing edge indicator
    CHECK(uart.rd(MSR) == (MSR_DSR | MSR_TERI));
    uart.wr(MCR, MCR_LOOP | MCR_DTR | MCR_OUT1);  // RI rises: no TERI
    CHECK(uart.rd(MSR) == (MSR_DSR | MSR_RI));

    uart.wr(FCR, 0x01);
    uart.put("loop\n");
    uart.dev.flush();
    CHECK(uart.chunks.empty());  // nothing left the UART
    std::string got;
    while (uart.rd(LSR) & LSR_DR) {
        got += static_cast<char>(uart.rd(RBR));
    }
    CHECK(got == "loop\n");

    // The serial input is disconnected in loopback.
    CHECK(uart.dev.rx_free() == 0);
    uart.receive("ignored");
    CHECK((uart.rd(LSR) & LSR_DR) == 0);

    // Leaving loopback restores the normal line states and the output.
    uart.wr(MCR, MCR_DTR | MCR_RTS | MCR_OUT2);
    CHECK((uart.rd(MSR) & 0xf0) == (MSR_CTS | MSR_DSR | MSR_DCD));
    uart.put("out\n");
    CHECK(uart.output() == "out\n");
    uart.receive("in");
    CHECK(uart.rd(RBR) == 'i');
}

TEST_CASE("Serial16550 loopback overflow sets OE") {
    Uart uart;
    uart.wr(MCR, MCR_LOOP);
    uart.put("ab");  // 16450 mode: one byte deep
    CHECK(uart.rd(LSR) == (LSR_DR | LSR_OE | LSR_THRE | LSR_TEMT));
    CHECK(uart.rd(RBR) == 'b');
}

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
