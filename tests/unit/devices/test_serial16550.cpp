// hv::Serial16550, register by register as a guest driver programs it:
// THR output, the divisor latch, IER, IIR priorities, the FIFOs, LSR, SCR,
// MSR and loopback. The IRQ line, wide accesses and the port bus are in
// test_serial16550_irq.cpp.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>

#include "devices/serial16550.hpp"
#include "tests/support/serial16550_fixture.hpp"

using namespace hv::test::serial16550;

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
