#include "devices/serial16550.hpp"

#include <utility>

namespace hv {
namespace {

// Register offsets. Offsets 0 and 1 are the divisor latch while LCR.DLAB is
// set; offset 2 is IIR for reads and FCR for writes.
constexpr uint64_t kRbrThrDll = 0;
constexpr uint64_t kIerDlm = 1;
constexpr uint64_t kIirFcr = 2;
constexpr uint64_t kLcr = 3;
constexpr uint64_t kMcr = 4;
constexpr uint64_t kLsr = 5;
constexpr uint64_t kMsr = 6;
constexpr uint64_t kScr = 7;

// IER
constexpr uint8_t kIerRxData = 0x01;
constexpr uint8_t kIerThre = 0x02;
constexpr uint8_t kIerLineStatus = 0x04;
constexpr uint8_t kIerModemStatus = 0x08;
constexpr uint8_t kIerWritable = 0x0f;  // the upper nibble is reserved on a 16550

// IIR interrupt identification, in priority order
constexpr uint8_t kIirNone = 0x01;
constexpr uint8_t kIirLineStatus = 0x06;
constexpr uint8_t kIirRxData = 0x04;
constexpr uint8_t kIirRxTimeout = 0x0c;
constexpr uint8_t kIirThre = 0x02;
constexpr uint8_t kIirModemStatus = 0x00;
constexpr uint8_t kIirFifoEnabled = 0xc0;

// FCR
constexpr uint8_t kFcrEnable = 0x01;
constexpr uint8_t kFcrClearRx = 0x02;
constexpr uint8_t kFcrTriggerShift = 6;
constexpr uint8_t kRxTriggerLevels[4] = {1, 4, 8, 14};

// LCR
constexpr uint8_t kLcrDlab = 0x80;

// MCR
constexpr uint8_t kMcrDtr = 0x01;
constexpr uint8_t kMcrRts = 0x02;
constexpr uint8_t kMcrOut1 = 0x04;
constexpr uint8_t kMcrOut2 = 0x08;
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kMcrWritable = 0x1f;

// LSR
constexpr uint8_t kLsrDataReady = 0x01;
constexpr uint8_t kLsrOverrun = 0x02;
constexpr uint8_t kLsrThre = 0x20;
constexpr uint8_t kLsrTemt = 0x40;

// MSR: deltas in the low nibble, line states in the high nibble
constexpr uint8_t kMsrDcts = 0x01;
constexpr uint8_t kMsrDdsr = 0x02;
constexpr uint8_t kMsrTeri = 0x04;
constexpr uint8_t kMsrDdcd = 0x08;
constexpr uint8_t kMsrCts = 0x10;
constexpr uint8_t kMsrDsr = 0x20;
constexpr uint8_t kMsrRi = 0x40;
constexpr uint8_t kMsrDcd = 0x80;

}  // namespace

Serial16550::Serial16550(OutputSink output) : output_(std::move(output)) {}

void Serial16550::read(uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < data.size(); ++i) {
        const uint64_t reg = offset + i;
        data[i] = reg < size ? read_register(reg) : 0xff;
        // Per byte, so an edge-triggered interrupt controller sees every edge.
        update_irq();
    }
}

void Serial16550::write(uint64_t offset, std::span<const uint8_t> data) {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < data.size(); ++i) {
        const uint64_t reg = offset + i;
        if (reg < size) {
            write_register(reg, data[i]);
            update_irq();
        }
    }
}

uint8_t Serial16550::read_register(uint64_t offset) {
    const bool dlab = (lcr_ & kLcrDlab) != 0;
    switch (offset) {
    case kRbrThrDll:
        if (dlab) {
            return static_cast<uint8_t>(divisor_);
        }
        if (!rx_fifo_.empty()) {
            rbr_ = rx_fifo_.front();
            rx_fifo_.pop_front();
        }
        return rbr_;
    case kIerDlm:
        return dlab ? static_cast<uint8_t>(divisor_ >> 8) : ier_;
    case kIirFcr: {
        const uint8_t id = interrupt_id();
        // Reading IIR acknowledges a THRE interrupt, but only when it is the
        // one being reported.
        if (id == kIirThre) {
            thre_pending_ = false;
        }
        return static_cast<uint8_t>(id | (fifo_enabled_ ? kIirFifoEnabled : 0));
    }
    case kLcr:
        return lcr_;
    case kMcr:
        return mcr_;
    case kLsr: {
        const uint8_t lsr = line_status();
        overrun_ = false;
        return lsr;
    }
    case kMsr: {
        const uint8_t msr = static_cast<uint8_t>(modem_status_inputs() | msr_delta_);
        msr_delta_ = 0;
        return msr;
    }
    case kScr:
        return scr_;
    default:
        return 0xff;
    }
}

void Serial16550::write_register(uint64_t offset, uint8_t value) {
    const bool dlab = (lcr_ & kLcrDlab) != 0;
    switch (offset) {
    case kRbrThrDll:
        if (dlab) {
            divisor_ = static_cast<uint16_t>((divisor_ & 0xff00) | value);
            return;
        }
        // Writing THR acknowledges the THRE interrupt; the byte then leaves
        // at once and THR is empty again, raising it anew. Letting the line
        // drop in between gives edge-triggered interrupt controllers an edge.
        thre_pending_ = false;
        update_irq();
        transmit(value);
        thre_pending_ = true;
        return;
    case kIerDlm: {
        if (dlab) {
            divisor_ = static_cast<uint16_t>((divisor_ & 0x00ff) | (value << 8));
            return;
        }
        const uint8_t old = ier_;
        ier_ = value & kIerWritable;
        // Enabling the THRE interrupt while THR is empty (always, here)
        // raises it, even if an earlier one was acknowledged; Linux's
        // startup code tests for exactly this.
        if ((ier_ & kIerThre) && !(old & kIerThre)) {
            thre_pending_ = true;
        }
        return;
    }
    case kIirFcr:
        write_fcr(value);
        return;
    case kLcr:
        lcr_ = value;
        return;
    case kMcr:
        write_mcr(value);
        return;
    case kScr:
        scr_ = value;
        return;
    default:
        // LSR and MSR are read-only.
        return;
    }
}

void Serial16550::write_fcr(uint8_t value) {
    const bool enable = (value & kFcrEnable) != 0;
    if (enable != fifo_enabled_) {
        // Switching between 16450 and FIFO mode empties the FIFOs.
        rx_fifo_.clear();
        fifo_enabled_ = enable;
    }
    if (!enable) {
        // The other FCR bits are only programmed while the enable bit is set.
        return;
    }
    if (value & kFcrClearRx) {
        rx_fifo_.clear();
    }
    // Clearing the TX FIFO needs nothing: transmitted bytes left at once.
    rx_trigger_ = kRxTriggerLevels[value >> kFcrTriggerShift];
}

void Serial16550::write_mcr(uint8_t value) {
    const uint8_t before = modem_status_inputs();
    mcr_ = value & kMcrWritable;
    const uint8_t after = modem_status_inputs();
    const uint8_t changed = before ^ after;
    if (changed & kMsrCts) {
        msr_delta_ |= kMsrDcts;
    }
    if (changed & kMsrDsr) {
        msr_delta_ |= kMsrDdsr;
    }
    if ((before & kMsrRi) && !(after & kMsrRi)) {  // trailing edge only
        msr_delta_ |= kMsrTeri;
    }
    if (changed & kMsrDcd) {
        msr_delta_ |= kMsrDdcd;
    }
}

void Serial16550::transmit(uint8_t byte) {
    if (loopback()) {
        push_rx(byte);
        return;
    }
    output_buffer_.push_back(byte);
    if (byte == '\n' || output_buffer_.size() >= output_buffer_limit) {
        flush_locked();
    }
}

void Serial16550::push_rx(uint8_t byte) {
    if (rx_fifo_.size() < rx_capacity()) {
        rx_fifo_.push_back(byte);
        return;
    }
    overrun_ = true;
    // In FIFO mode the new byte is lost; in 16450 mode it overwrites the
    // unread one in the holding register.
    if (!fifo_enabled_) {
        rx_fifo_.back() = byte;
    }
}

void Serial16550::flush() {
    std::lock_guard lock(mutex_);
    flush_locked();
}

void Serial16550::flush_locked() {
    if (output_buffer_.empty()) {
        return;
    }
    std::vector<uint8_t> bytes;
    bytes.swap(output_buffer_);
    if (output_) {
        output_(bytes);
    }
}

void Serial16550::receive(std::span<const uint8_t> bytes) {
    std::lock_guard lock(mutex_);
    if (loopback()) {
        return;
    }
    for (uint8_t byte : bytes) {
        push_rx(byte);
    }
    update_irq();
}

std::size_t Serial16550::rx_free() const {
    std::lock_guard lock(mutex_);
    return loopback() ? 0 : rx_capacity() - rx_fifo_.size();
}

bool Serial16550::rx_interrupt_enabled() const {
    std::lock_guard lock(mutex_);
    return (ier_ & 0x01) != 0; // IER bit 0: received data available
}

void Serial16550::set_irq_line(IrqLine line) {
    std::lock_guard lock(mutex_);
    irq_line_ = std::move(line);
    if (irq_level_ && irq_line_) {
        irq_line_(true);
    }
}

bool Serial16550::irq_level() const {
    std::lock_guard lock(mutex_);
    return irq_level_;
}

std::size_t Serial16550::rx_capacity() const {
    return fifo_enabled_ ? fifo_depth : 1;
}

bool Serial16550::loopback() const {
    return (mcr_ & kMcrLoop) != 0;
}

uint8_t Serial16550::modem_status_inputs() const {
    if (!loopback()) {
        // Nothing is connected that could drop these: the host is always
        // ready, so the guest never waits on flow control.
        return kMsrCts | kMsrDsr | kMsrDcd;
    }
    // Loopback wires the modem control outputs back to the status inputs.
    uint8_t inputs = 0;
    if (mcr_ & kMcrRts) {
        inputs |= kMsrCts;
    }
    if (mcr_ & kMcrDtr) {
        inputs |= kMsrDsr;
    }
    if (mcr_ & kMcrOut1) {
        inputs |= kMsrRi;
    }
    if (mcr_ & kMcrOut2) {
        inputs |= kMsrDcd;
    }
    return inputs;
}

uint8_t Serial16550::line_status() const {
    uint8_t lsr = kLsrThre | kLsrTemt;  // output is immediate
    if (!rx_fifo_.empty()) {
        lsr |= kLsrDataReady;
    }
    if (overrun_) {
        lsr |= kLsrOverrun;
    }
    return lsr;
}

uint8_t Serial16550::interrupt_id() const {
    if ((ier_ & kIerLineStatus) && overrun_) {
        return kIirLineStatus;
    }
    if ((ier_ & kIerRxData) && !rx_fifo_.empty()) {
        // Below the trigger level a real FIFO reports a character timeout
        // once the line has been idle for 4 characters; with no line timing
        // here that is immediately.
        return fifo_enabled_ && rx_fifo_.size() < rx_trigger_ ? kIirRxTimeout : kIirRxData;
    }
    if ((ier_ & kIerThre) && thre_pending_) {
        return kIirThre;
    }
    if ((ier_ & kIerModemStatus) && msr_delta_ != 0) {
        return kIirModemStatus;
    }
    return kIirNone;
}

bool Serial16550::compute_irq_level() const {
    // On PCs the UART's interrupt output reaches the IRQ line only through a
    // buffer enabled by OUT2; loopback forces OUT2 inactive at the pin.
    const bool gate_open = (mcr_ & kMcrOut2) && !loopback();
    return gate_open && interrupt_id() != kIirNone;
}

void Serial16550::update_irq() {
    const bool level = compute_irq_level();
    if (level == irq_level_) {
        return;
    }
    irq_level_ = level;
    if (irq_line_) {
        irq_line_(level);
    }
}

}  // namespace hv
