#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <span>

#include "devices/io_device.hpp"

namespace hv {

// The PC keyboard controller (an Intel 8042 in PS/2 mode) with a keyboard
// attached and nothing on the auxiliary (mouse) port. Modelled closely
// enough for Linux's i8042 and atkbd drivers to probe it without timeouts,
// and for `reboot=k` to reset the machine through it. The host sends no
// keystrokes: the keyboard only answers commands.
//
// The controller has two ports, data (0x60) and status/command (0x64), and
// port 0x61 between them belongs to someone else (the PIT's speaker gate),
// so it is registered as two ranges of port_size bytes through the facades
// data_port() and command_port(). A wider access uses its first byte; the
// rest read as 0xff and are ignored on writes, as they belong to the
// neighbouring ports.
//
// The output buffer is a queue of output_queue_depth bytes (the real
// controller holds one byte and the keyboard buffers the rest); a byte
// arriving when it is full is dropped. Reading the data port pops one byte;
// with the queue empty it returns the last byte again. Controller replies
// count as keyboard data, as on real hardware.
//
// Interrupts: IRQ1 is asserted while the byte at the head of the queue is
// keyboard data and the configuration byte enables keyboard interrupts;
// IRQ12 likewise for aux data. Each read drops the line before the next
// byte raises it again, so edge-triggered interrupt controllers see one edge
// per byte, as they do on hardware.
//
// The auxiliary port has no device. A byte sent to it (command 0xD4) is
// answered the way a controller reports a transmit timeout: 0xFE as aux data
// with the status timeout bit set. Linux's psmouse then aborts its command at
// once instead of waiting for an ACK, and the mouse probe fails quickly.
// Loopback (0xD3) and the aux interface test (0xA9) still work, so Linux
// registers an AUX port; it just finds no mouse on it.
//
// Commands the model does not know are ignored: no reply, no state change.
// The system flag in the status register mirrors configuration bit 2.
//
// Threading: every entry point takes the device's mutex. on_reset and the
// IRQ callbacks are invoked with that mutex held, in the order the events
// happen; they must not call back into this device. on_reset is called for
// every reset pulse: Linux repeats the reset command until it takes effect,
// so the VMM must tolerate repeats. The controller's own state is left as it
// was; what a reset means is up to the VMM.
class I8042 {
public:
    using OnReset = std::function<void()>;
    using IrqLine = std::function<void(bool level)>;

    static constexpr uint16_t data_port_address = 0x60;
    static constexpr uint16_t command_port_address = 0x64;
    static constexpr uint64_t port_size = 1;  // each facade's registered size
    static constexpr std::size_t output_queue_depth = 16;  // what Linux flushes at most

    // What a BIOS leaves after POST: keyboard interrupt on, system flag set,
    // aux port disabled, scancode translation on. Linux rewrites it anyway.
    static constexpr uint8_t power_on_config = 0x65;
    // The output port with the reset line released and A20 enabled.
    static constexpr uint8_t power_on_output_port = 0x03;

    // keyboard_irq drives IRQ1 and aux_irq IRQ12; either may be empty. Both
    // lines start low and each callback is called on every level change.
    explicit I8042(OnReset on_reset, IrqLine keyboard_irq = {}, IrqLine aux_irq = {});

    // The facades refer to this object.
    I8042(const I8042&) = delete;
    I8042& operator=(const I8042&) = delete;

    // Register at data_port_address and command_port_address, port_size
    // bytes each.
    IoDevice& data_port() { return data_port_; }
    IoDevice& command_port() { return command_port_; }

    // The current levels of the two interrupt outputs.
    bool keyboard_irq_level() const;
    bool aux_irq_level() const;

private:
    enum class Port { Data, Command };

    // Which device put a byte in the output buffer; it selects the status
    // aux bit and the IRQ line.
    enum class Source { Keyboard, Aux };

    // A controller command waiting for its parameter on the data port.
    enum class PendingCommand {
        None,
        WriteConfig,          // 0x60
        WriteOutputPort,      // 0xD1
        WriteKeyboardOutput,  // 0xD2
        WriteAuxOutput,       // 0xD3
        WriteToAux,           // 0xD4
    };

    // A keyboard command waiting for its parameter byte.
    enum class KeyboardParameter { None, Leds, Typematic, ScancodeSet };

    struct OutputByte {
        uint8_t value;
        Source source;
        bool timeout;  // shown in the status register while this byte is at the head
    };

    class PortFacade final : public IoDevice {
    public:
        PortFacade(I8042& controller, Port port) : controller_(controller), port_(port) {}

        void read(uint64_t offset, std::span<uint8_t> data) override;
        void write(uint64_t offset, std::span<const uint8_t> data) override;

    private:
        I8042& controller_;
        Port port_;
    };

    void read_port(Port port, uint64_t offset, std::span<uint8_t> data);
    void write_port(Port port, uint64_t offset, std::span<const uint8_t> data);

    uint8_t status() const;
    uint8_t read_data();
    void write_command(uint8_t command);
    void write_data(uint8_t value);
    void keyboard_receive(uint8_t byte);
    void keyboard_parameter(uint8_t byte);
    void write_output_port(uint8_t value);
    void queue_output(uint8_t value, Source source, bool timeout = false);

    bool compute_irq_level(Source source) const;
    void set_irq_levels(bool keyboard, bool aux);
    void update_irqs();

    mutable std::mutex mutex_;
    OnReset on_reset_;
    IrqLine keyboard_irq_;
    IrqLine aux_irq_;
    bool keyboard_irq_level_ = false;
    bool aux_irq_level_ = false;

    PortFacade data_port_{*this, Port::Data};
    PortFacade command_port_{*this, Port::Command};

    std::deque<OutputByte> output_;
    uint8_t last_output_ = 0;  // what a read of an empty buffer returns
    uint8_t config_ = power_on_config;
    uint8_t output_port_ = power_on_output_port;
    bool last_write_was_command_ = false;
    PendingCommand pending_ = PendingCommand::None;
    KeyboardParameter keyboard_parameter_ = KeyboardParameter::None;
    uint8_t scancode_set_ = 2;
};

}  // namespace hv
