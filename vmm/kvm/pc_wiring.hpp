#pragma once
// How the PC platform's interrupt lines are wired. What wires them
// (KvmVm::create_pc_irqchip, PcPlatform) and what describes them to the
// guest (the ACPI MADT, the MP table) must agree: one place for both.
#include <cstdint>

namespace hv::pc_wiring {

inline constexpr std::uint8_t kIsaIrqs = 16;   // IRQ n: PIC input n, IOAPIC pin n, unless said below
inline constexpr std::uint8_t kIoApicPins = 24;
inline constexpr std::uint8_t kPitIrq = 0;       // KVM's in-kernel PIT raises GSI 0 ...
inline constexpr std::uint8_t kPitIoApicPin = 2; // ... which reaches IOAPIC pin 2, as on a PC and QEMU
inline constexpr std::uint8_t kCascadeIrq = 2;   // the second 8259's output into the first: no IOAPIC pin
inline constexpr std::uint8_t kKeyboardIrq = 1, kSerial0Irq = 4, kAuxIrq = 12; // i8042, COM1

// MPS INTI flags, as the MADT's and the MP table's interrupt entries carry
// them: polarity in bits 0-1, trigger mode in bits 2-3; 0 in both means
// "conforms to the bus" (ISA: edge, active high).
inline constexpr std::uint16_t kIntiConforming = 0;
inline constexpr std::uint16_t kIntiActiveHigh = 0b01;
inline constexpr std::uint16_t kIntiLevelTriggered = 0b11 << 2;

} // namespace hv::pc_wiring
