#include "devices/i8042.hpp"

#include <utility>

namespace hv {
namespace {

// Status register
constexpr uint8_t kStatusOutputFull = 0x01;
// Bit 1, input buffer full, is always clear: written bytes are consumed at
// once, so guests polling it before a write never wait.
constexpr uint8_t kStatusSystemFlag = 0x04;
constexpr uint8_t kStatusLastWasCommand = 0x08;
constexpr uint8_t kStatusNotInhibited = 0x10;  // the keylock switch is off
constexpr uint8_t kStatusAuxData = 0x20;
constexpr uint8_t kStatusTimeout = 0x40;

// Configuration byte ("command byte")
constexpr uint8_t kConfigKeyboardIrq = 0x01;
constexpr uint8_t kConfigAuxIrq = 0x02;
constexpr uint8_t kConfigSystemFlag = 0x04;
constexpr uint8_t kConfigKeyboardDisabled = 0x10;
constexpr uint8_t kConfigAuxDisabled = 0x20;

// Output port
constexpr uint8_t kOutputPortResetReleased = 0x01;  // 0 holds the CPU in reset

// Controller commands
constexpr uint8_t kCmdReadConfig = 0x20;
constexpr uint8_t kCmdWriteConfig = 0x60;
constexpr uint8_t kCmdAuxDisable = 0xa7;
constexpr uint8_t kCmdAuxEnable = 0xa8;
constexpr uint8_t kCmdAuxTest = 0xa9;
constexpr uint8_t kCmdSelfTest = 0xaa;
constexpr uint8_t kCmdKeyboardTest = 0xab;
constexpr uint8_t kCmdKeyboardDisable = 0xad;
constexpr uint8_t kCmdKeyboardEnable = 0xae;
constexpr uint8_t kCmdReadOutputPort = 0xd0;
constexpr uint8_t kCmdWriteOutputPort = 0xd1;
constexpr uint8_t kCmdWriteKeyboardOutput = 0xd2;
constexpr uint8_t kCmdWriteAuxOutput = 0xd3;
constexpr uint8_t kCmdWriteToAux = 0xd4;
// 0xF0-0xFF pulse the output port lines whose bits are clear in the low
// nibble; bit 0 is the CPU reset line.
constexpr uint8_t kCmdPulseOutputPort = 0xf0;

// Controller replies
constexpr uint8_t kSelfTestPassed = 0x55;
constexpr uint8_t kInterfaceTestPassed = 0x00;
constexpr uint8_t kAuxTransmitTimeout = 0xfe;

// Keyboard commands and replies
constexpr uint8_t kKbdSetLeds = 0xed;
constexpr uint8_t kKbdEcho = 0xee;
constexpr uint8_t kKbdScancodeSet = 0xf0;
constexpr uint8_t kKbdIdentify = 0xf2;
constexpr uint8_t kKbdTypematic = 0xf3;
constexpr uint8_t kKbdReset = 0xff;
constexpr uint8_t kKbdAck = 0xfa;
constexpr uint8_t kKbdSelfTestPassed = 0xaa;
constexpr uint8_t kKbdId[2] = {0xab, 0x83};  // an MF2 keyboard
constexpr uint8_t kKbdQueryScancodeSet = 0x00;

}  // namespace

void I8042::PortFacade::read(uint64_t offset, std::span<uint8_t> data) {
    controller_.read_port(port_, offset, data);
}

void I8042::PortFacade::write(uint64_t offset, std::span<const uint8_t> data) {
    controller_.write_port(port_, offset, data);
}

I8042::I8042(OnReset on_reset, IrqLine keyboard_irq, IrqLine aux_irq)
    : on_reset_(std::move(on_reset)),
      keyboard_irq_(std::move(keyboard_irq)),
      aux_irq_(std::move(aux_irq)) {}

bool I8042::keyboard_irq_level() const {
    std::lock_guard lock(mutex_);
    return keyboard_irq_level_;
}

bool I8042::aux_irq_level() const {
    std::lock_guard lock(mutex_);
    return aux_irq_level_;
}

void I8042::read_port(Port port, uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < data.size(); ++i) {
        if (offset + i != 0) {
            data[i] = 0xff;
            continue;
        }
        data[i] = port == Port::Data ? read_data() : status();
    }
}

void I8042::write_port(Port port, uint64_t offset, std::span<const uint8_t> data) {
    if (offset != 0 || data.empty()) {
        return;
    }
    std::lock_guard lock(mutex_);
    if (port == Port::Data) {
        write_data(data[0]);
    } else {
        write_command(data[0]);
    }
    update_irqs();
}

uint8_t I8042::status() const {
    uint8_t status = kStatusNotInhibited;
    if (config_ & kConfigSystemFlag) {
        status |= kStatusSystemFlag;
    }
    if (last_write_was_command_) {
        status |= kStatusLastWasCommand;
    }
    if (!output_.empty()) {
        const OutputByte& head = output_.front();
        status |= kStatusOutputFull;
        if (head.source == Source::Aux) {
            status |= kStatusAuxData;
        }
        if (head.timeout) {
            status |= kStatusTimeout;
        }
    }
    return status;
}

uint8_t I8042::read_data() {
    if (output_.empty()) {
        return last_output_;
    }
    last_output_ = output_.front().value;
    output_.pop_front();
    // The buffer is empty for a moment before the next byte moves in: drop
    // both lines so the next byte raises a fresh edge.
    set_irq_levels(false, false);
    update_irqs();
    return last_output_;
}

void I8042::write_command(uint8_t command) {
    last_write_was_command_ = true;
    // A new command abandons one still waiting for its parameter.
    pending_ = PendingCommand::None;

    if (command >= kCmdPulseOutputPort) {
        if ((command & kOutputPortResetReleased) == 0 && on_reset_) {
            on_reset_();
        }
        // The other lines (A20 among them) return to their levels after the
        // pulse, so nothing else changes.
        return;
    }

    switch (command) {
    case kCmdReadConfig:
        queue_output(config_, Source::Keyboard);
        return;
    case kCmdWriteConfig:
        pending_ = PendingCommand::WriteConfig;
        return;
    case kCmdAuxDisable:
        config_ |= kConfigAuxDisabled;
        return;
    case kCmdAuxEnable:
        config_ &= static_cast<uint8_t>(~kConfigAuxDisabled);
        return;
    case kCmdAuxTest:
    case kCmdKeyboardTest:
        queue_output(kInterfaceTestPassed, Source::Keyboard);
        return;
    case kCmdSelfTest:
        config_ |= kConfigSystemFlag;
        queue_output(kSelfTestPassed, Source::Keyboard);
        return;
    case kCmdKeyboardDisable:
        config_ |= kConfigKeyboardDisabled;
        return;
    case kCmdKeyboardEnable:
        config_ &= static_cast<uint8_t>(~kConfigKeyboardDisabled);
        return;
    case kCmdReadOutputPort:
        queue_output(output_port_, Source::Keyboard);
        return;
    case kCmdWriteOutputPort:
        pending_ = PendingCommand::WriteOutputPort;
        return;
    case kCmdWriteKeyboardOutput:
        pending_ = PendingCommand::WriteKeyboardOutput;
        return;
    case kCmdWriteAuxOutput:
        pending_ = PendingCommand::WriteAuxOutput;
        return;
    case kCmdWriteToAux:
        pending_ = PendingCommand::WriteToAux;
        return;
    default:
        // Unknown or unneeded (controller RAM beyond the configuration byte,
        // input port, password, multiplexer...): ignored without a reply. A
        // guest waiting for one times out, as with a controller lacking it.
        return;
    }
}

void I8042::write_data(uint8_t value) {
    last_write_was_command_ = false;
    const PendingCommand pending = std::exchange(pending_, PendingCommand::None);
    switch (pending) {
    case PendingCommand::None:
        keyboard_receive(value);
        return;
    case PendingCommand::WriteConfig:
        config_ = value;
        return;
    case PendingCommand::WriteOutputPort:
        write_output_port(value);
        return;
    case PendingCommand::WriteKeyboardOutput:
        queue_output(value, Source::Keyboard);
        return;
    case PendingCommand::WriteAuxOutput:
        queue_output(value, Source::Aux);
        return;
    case PendingCommand::WriteToAux:
        // Nothing is attached, so the transmission times out.
        queue_output(kAuxTransmitTimeout, Source::Aux, true);
        return;
    }
}

void I8042::write_output_port(uint8_t value) {
    // The reset line reads back released: by the time the guest could read
    // it, the reset it asked for has been handed to the VMM.
    output_port_ = static_cast<uint8_t>(value | kOutputPortResetReleased);
    // A20 (bit 1) is stored but has no effect: the address line is always
    // enabled, which is what every modern guest wants.
    if ((value & kOutputPortResetReleased) == 0 && on_reset_) {
        on_reset_();
    }
}

// The keyboard's side: it answers each command byte at once. The disable bit
// in the configuration byte is not consulted: it only stops scancodes, and
// there are none.
void I8042::keyboard_receive(uint8_t byte) {
    if (keyboard_parameter_ != KeyboardParameter::None) {
        keyboard_parameter(byte);
        return;
    }
    switch (byte) {
    case kKbdReset:
        scancode_set_ = 2;
        queue_output(kKbdAck, Source::Keyboard);
        queue_output(kKbdSelfTestPassed, Source::Keyboard);
        return;
    case kKbdIdentify:
        queue_output(kKbdAck, Source::Keyboard);
        queue_output(kKbdId[0], Source::Keyboard);
        queue_output(kKbdId[1], Source::Keyboard);
        return;
    case kKbdEcho:
        queue_output(kKbdEcho, Source::Keyboard);
        return;
    case kKbdSetLeds:
        keyboard_parameter_ = KeyboardParameter::Leds;
        break;
    case kKbdTypematic:
        keyboard_parameter_ = KeyboardParameter::Typematic;
        break;
    case kKbdScancodeSet:
        keyboard_parameter_ = KeyboardParameter::ScancodeSet;
        break;
    default:
        // Enable, disable, set defaults, resend and the rest only need an
        // acknowledgement: there is no scanning state to change.
        break;
    }
    queue_output(kKbdAck, Source::Keyboard);
}

void I8042::keyboard_parameter(uint8_t byte) {
    const KeyboardParameter parameter =
        std::exchange(keyboard_parameter_, KeyboardParameter::None);
    queue_output(kKbdAck, Source::Keyboard);
    if (parameter != KeyboardParameter::ScancodeSet) {
        return;  // LEDs and typematic rate have nothing to drive here
    }
    if (byte == kKbdQueryScancodeSet) {
        // Untranslated, like the other replies: there are no scancodes to
        // translate, and Linux only asks when translation is off.
        queue_output(scancode_set_, Source::Keyboard);
    } else if (byte >= 1 && byte <= 3) {
        scancode_set_ = byte;
    }
}

void I8042::queue_output(uint8_t value, Source source, bool timeout) {
    if (output_.size() >= output_queue_depth) {
        return;
    }
    output_.push_back(OutputByte{value, source, timeout});
}

bool I8042::compute_irq_level(Source source) const {
    if (output_.empty() || output_.front().source != source) {
        return false;
    }
    const uint8_t enable = source == Source::Keyboard ? kConfigKeyboardIrq : kConfigAuxIrq;
    return (config_ & enable) != 0;
}

void I8042::set_irq_levels(bool keyboard, bool aux) {
    if (keyboard != keyboard_irq_level_) {
        keyboard_irq_level_ = keyboard;
        if (keyboard_irq_) {
            keyboard_irq_(keyboard);
        }
    }
    if (aux != aux_irq_level_) {
        aux_irq_level_ = aux;
        if (aux_irq_) {
            aux_irq_(aux);
        }
    }
}

void I8042::update_irqs() {
    set_irq_levels(compute_irq_level(Source::Keyboard), compute_irq_level(Source::Aux));
}

}  // namespace hv
