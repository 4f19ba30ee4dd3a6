#include "devices/acpi_pm.hpp"

#include <array>
#include <utility>

namespace hv {
namespace {

// Register indexes: each register is 16 bits, at offset 2 * index.
constexpr uint64_t kPm1Status = 0;
constexpr uint64_t kPm1Enable = 1;
constexpr uint64_t kPm1Control = 2;
constexpr uint64_t kRegisters = 3;
constexpr uint64_t kRegisterBytes = 2;

// PM1_STS
constexpr uint16_t kWakeStatus = 1u << 15;

// PM1_CNT
constexpr uint16_t kSciEnable = 1u << 0;
constexpr unsigned kSleepTypeShift = 10;
constexpr uint16_t kSleepTypeMask = 0x7;  // after shifting
constexpr uint16_t kSleepEnable = 1u << 13;

}  // namespace

AcpiPmRegisters::AcpiPmRegisters(OnSleep on_sleep) : on_sleep_(std::move(on_sleep)) {}

void AcpiPmRegisters::read(uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < data.size(); ++i) {
        const uint64_t byte = offset + i;
        if (byte >= size) {
            data[i] = 0xff;
            continue;
        }
        const uint16_t value = read_register(byte / kRegisterBytes);
        data[i] = static_cast<uint8_t>(value >> (8 * (byte % kRegisterBytes)));
    }
}

void AcpiPmRegisters::write(uint64_t offset, std::span<const uint8_t> data) {
    // Gather the bytes per register first: a register's write-1-to-clear and
    // SLP_EN semantics apply to the access as a whole, once.
    std::array<uint16_t, kRegisters> values{};
    std::array<uint16_t, kRegisters> byte_masks{};
    for (std::size_t i = 0; i < data.size(); ++i) {
        const uint64_t byte = offset + i;
        if (byte >= size) {
            continue;
        }
        const unsigned shift = 8 * (byte % kRegisterBytes);
        values[byte / kRegisterBytes] |= static_cast<uint16_t>(data[i] << shift);
        byte_masks[byte / kRegisterBytes] |= static_cast<uint16_t>(0xff << shift);
    }
    std::lock_guard lock(mutex_);
    for (uint64_t index = 0; index < kRegisters; ++index) {
        if (byte_masks[index] != 0) {
            write_register(index, values[index], byte_masks[index]);
        }
    }
}

uint16_t AcpiPmRegisters::read_register(uint64_t index) const {
    switch (index) {
    case kPm1Status:
        return status_;
    case kPm1Enable:
        return enable_;
    case kPm1Control:
        return static_cast<uint16_t>(kSciEnable | (sleep_type_ << kSleepTypeShift));
    default:
        return 0xffff;  // unreachable: read() only asks for registers below size
    }
}

void AcpiPmRegisters::write_register(uint64_t index, uint16_t value, uint16_t byte_mask) {
    const uint16_t written = value & byte_mask;
    switch (index) {
    case kPm1Status:
        status_ &= static_cast<uint16_t>(~written);
        return;
    case kPm1Enable:
        enable_ = static_cast<uint16_t>((enable_ & ~byte_mask) | written);
        return;
    case kPm1Control: {
        // SLP_TYP and SLP_EN both live in the upper byte; SCI_EN and the
        // other bits of the lower byte are fixed or unimplemented.
        const uint16_t upper_byte = 0xff00;
        if ((byte_mask & upper_byte) == 0) {
            return;
        }
        sleep_type_ = static_cast<uint8_t>((written >> kSleepTypeShift) & kSleepTypeMask);
        if (written & kSleepEnable) {
            // The platform "wakes" as soon as it has slept: for sleep types
            // the VMM ignores, the guest's wait for WAK_STS then ends.
            status_ |= kWakeStatus;
            if (on_sleep_) {
                on_sleep_(sleep_type_);
            }
        }
        return;
    }
    default:
        return;  // unreachable: write() only passes registers below size
    }
}

}  // namespace hv
