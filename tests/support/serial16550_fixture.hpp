#pragma once
// Shared by the Serial16550 tests (test_serial16550*.cpp): the registers and
// bits as the guest driver sees them, and a UART whose output and IRQ line
// levels are recorded.
#include <array>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "devices/serial16550.hpp"

namespace hv::test::serial16550 {

// Register offsets and bits as the guest driver sees them.
inline constexpr uint64_t RBR = 0, THR = 0, DLL = 0, IER = 1, DLM = 1, IIR = 2, FCR = 2, LCR = 3,
                          MCR = 4, LSR = 5, MSR = 6, SCR = 7;
inline constexpr uint8_t LCR_DLAB = 0x80;
inline constexpr uint8_t MCR_DTR = 0x01, MCR_RTS = 0x02, MCR_OUT1 = 0x04, MCR_OUT2 = 0x08,
                         MCR_LOOP = 0x10;
inline constexpr uint8_t IER_RX = 0x01, IER_THRE = 0x02, IER_LINE = 0x04, IER_MODEM = 0x08;
inline constexpr uint8_t IIR_NONE = 0x01, IIR_LINE = 0x06, IIR_RX = 0x04, IIR_TIMEOUT = 0x0c,
                         IIR_THRE = 0x02, IIR_MODEM = 0x00, IIR_FIFO = 0xc0;
inline constexpr uint8_t LSR_DR = 0x01, LSR_OE = 0x02, LSR_THRE = 0x20, LSR_TEMT = 0x40;
inline constexpr uint8_t MSR_DCTS = 0x01, MSR_DDSR = 0x02, MSR_TERI = 0x04, MSR_DDCD = 0x08,
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

} // namespace hv::test::serial16550
