#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>
#include <vector>

#include "devices/io_device.hpp"

namespace hv {

// An NS16550A UART (PC COM port), modelled closely enough for Linux's 8250
// driver to probe and drive it: registers, FIFO, loopback, modem status and
// the interrupt output. Transmission is instantaneous, so THR is always
// empty and the baud divisor only affects what the guest reads back.
//
// Register it with size 8 (HV_SERIAL_PORT = 0x3f8). The UART is an 8-bit
// device; a wider access is split into byte accesses to consecutive
// registers, as the PC's ISA bus does, and bytes past offset 7 read as 0xff.
//
// Threading: every entry point takes the device's mutex. The output sink and
// the IRQ callback are invoked with that mutex held (so bytes and level
// changes are delivered in order); they must not call back into this device.
class Serial16550 final : public IoDevice {
public:
    using OutputSink = std::function<void(std::span<const uint8_t>)>;
    using IrqLine = std::function<void(bool level)>;

    static constexpr uint64_t size = 8;
    static constexpr std::size_t fifo_depth = 16;
    // Transmitted bytes are passed to the sink at '\n', when this many are
    // pending, and on flush().
    static constexpr std::size_t output_buffer_limit = 256;

    explicit Serial16550(OutputSink output);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Hands any buffered transmitted bytes to the output sink. The VMM must
    // call this whenever the guest stops (the destructor does not, because
    // the sink may refer to objects already destroyed by then).
    void flush();

    // Queues bytes arriving on the serial line. The RX FIFO holds 16 bytes
    // with FCR FIFO enable set and 1 otherwise; a byte arriving when it is
    // full is lost and sets LSR.OE. In loopback mode the serial input is
    // disconnected, as on real hardware, and bytes are dropped.
    void receive(std::span<const uint8_t> bytes);

    // How many bytes receive() can take now without loss: lets the VMM hold
    // back host input until the guest has drained the FIFO.
    std::size_t rx_free() const;

    // Whether the guest has enabled the received-data interrupt (IER bit 0):
    // a driver that does so is listening, so host input is not lost to a
    // probe or a FIFO reset during its set-up.
    bool rx_interrupt_enabled() const;

    // Connects the interrupt output (the PC's IRQ line after the OUT2 gate).
    // The callback is called on every level change; if the line is already
    // asserted it is called at once with true.
    void set_irq_line(IrqLine line);

    // The current level of the interrupt output.
    bool irq_level() const;

private:
    void write_register(uint64_t offset, uint8_t value);
    uint8_t read_register(uint64_t offset);

    void transmit(uint8_t byte);
    void push_rx(uint8_t byte);
    void write_fcr(uint8_t value);
    void write_mcr(uint8_t value);
    void flush_locked();

    std::size_t rx_capacity() const;
    bool loopback() const;
    uint8_t modem_status_inputs() const;
    uint8_t interrupt_id() const;
    uint8_t line_status() const;
    bool compute_irq_level() const;
    void update_irq();

    mutable std::mutex mutex_;
    OutputSink output_;
    IrqLine irq_line_;
    bool irq_level_ = false;
    std::vector<uint8_t> output_buffer_;

    std::deque<uint8_t> rx_fifo_;
    uint8_t rbr_ = 0;  // last byte read; real hardware keeps showing it
    uint8_t ier_ = 0;
    uint8_t lcr_ = 0;
    uint8_t mcr_ = 0;
    uint8_t scr_ = 0;
    uint8_t msr_delta_ = 0;  // MSR bits 0-3
    uint16_t divisor_ = 1;   // 115200 baud; never 0 so guests computing a baud rate from it don't divide by 0
    bool fifo_enabled_ = false;
    uint8_t rx_trigger_ = 1;
    bool overrun_ = false;
    // The THR-empty interrupt is an event, not a level: it is raised when THR
    // empties or ETBEI is enabled, and cleared by reading IIR or writing THR.
    bool thre_pending_ = false;
};

}  // namespace hv
