#include "devices/cmos_rtc.hpp"

#include <algorithm>
#include <chrono>
#include <utility>

#include "devices/little_endian.hpp"

namespace hv {
namespace {

// Port offsets
constexpr uint64_t kIndexPort = 0;
constexpr uint64_t kDataPort = 1;
constexpr uint8_t kNmiDisable = 0x80;
constexpr uint8_t kIndexMask = 0x7f;

// Clock registers
constexpr uint8_t kSeconds = 0x00;
constexpr uint8_t kMinutes = 0x02;
constexpr uint8_t kHours = 0x04;
constexpr uint8_t kWeekday = 0x06;
constexpr uint8_t kDayOfMonth = 0x07;
constexpr uint8_t kMonth = 0x08;
constexpr uint8_t kYear = 0x09;
constexpr uint8_t kRegisterA = 0x0a;
constexpr uint8_t kRegisterB = 0x0b;
constexpr uint8_t kRegisterC = 0x0c;
constexpr uint8_t kRegisterD = 0x0d;
constexpr uint8_t kCentury = 0x32;  // where ACPI's FADT says it is on PCs

// Register A: 32.768 kHz time base, 1024 Hz periodic rate. Bit 7 (update in
// progress) is read-only and always reads 0 here.
constexpr uint8_t kRegisterAPowerOn = 0x26;
constexpr uint8_t kRegisterAUpdateInProgress = 0x80;

// Register B
constexpr uint8_t kRegisterBSet = 0x80;
constexpr uint8_t kRegisterBUpdateIrq = 0x10;
constexpr uint8_t kRegisterBBinary = 0x04;
constexpr uint8_t kRegisterB24Hour = 0x02;
constexpr uint8_t kRegisterBPowerOn = kRegisterB24Hour;  // BCD, 24-hour

// Register D
constexpr uint8_t kRegisterDValidRamAndTime = 0x80;

// 12-hour mode marks afternoon hours with bit 7.
constexpr uint8_t kHourPm = 0x80;

// Memory size bytes, little-endian.
constexpr uint8_t kBaseMemoryKib = 0x15;          // 2 bytes
constexpr uint8_t kExtendedMemoryKib = 0x17;      // 2 bytes, above 1 MiB
constexpr uint8_t kExtendedMemoryKibCopy = 0x30;  // 2 bytes, the same again
constexpr uint8_t kMemoryAbove16Mib = 0x34;       // 2 bytes, 64 KiB units, below 4 GiB
constexpr uint8_t kMemoryAbove4Gib = 0x5b;        // 3 bytes, 64 KiB units

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = 1024 * kKiB;
constexpr uint64_t kGiB = 1024 * kMiB;
constexpr uint64_t kBaseMemoryLimitKib = 640;

uint64_t kib_above(uint64_t ram_bytes, uint64_t start) {
    return ram_bytes > start ? (ram_bytes - start) / kKiB : 0;
}

}  // namespace

std::time_t CmosRtc::host_utc_time() {
    return std::time(nullptr);
}

CmosRtc::CmosRtc(uint64_t guest_ram_bytes, Clock clock) : clock_(std::move(clock)) {
    if (!clock_) {
        clock_ = host_utc_time;
    }
    ram_[kRegisterA] = kRegisterAPowerOn;
    ram_[kRegisterB] = kRegisterBPowerOn;

    auto store = [this](uint8_t index, std::size_t width, uint64_t value) {
        store_le(value, std::span<uint8_t>(ram_).subspan(index, width));
    };
    store(kBaseMemoryKib, 2, std::min(kBaseMemoryLimitKib, guest_ram_bytes / kKiB));
    const uint64_t extended_kib = std::min<uint64_t>(kib_above(guest_ram_bytes, 1 * kMiB), 0xffff);
    store(kExtendedMemoryKib, 2, extended_kib);
    store(kExtendedMemoryKibCopy, 2, extended_kib);
    const uint64_t below_4g = std::min(guest_ram_bytes, 4 * kGiB);
    store(kMemoryAbove16Mib, 2, std::min<uint64_t>(kib_above(below_4g, 16 * kMiB) / 64, 0xffff));
    store(kMemoryAbove4Gib, 3,
          std::min<uint64_t>(kib_above(guest_ram_bytes, 4 * kGiB) / 64, 0xffffff));
}

void CmosRtc::read(uint64_t offset, std::span<uint8_t> data) {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < data.size(); ++i) {
        data[i] = offset + i == kDataPort ? read_register(index_) : 0xff;
    }
}

void CmosRtc::write(uint64_t offset, std::span<const uint8_t> data) {
    std::lock_guard lock(mutex_);
    for (std::size_t i = 0; i < data.size(); ++i) {
        const uint64_t port_offset = offset + i;
        if (port_offset == kIndexPort) {
            index_ = data[i] & kIndexMask;
            nmi_disabled_ = (data[i] & kNmiDisable) != 0;
        } else if (port_offset == kDataPort) {
            write_register(index_, data[i]);
        }
    }
}

bool CmosRtc::nmi_disabled() const {
    std::lock_guard lock(mutex_);
    return nmi_disabled_;
}

uint8_t CmosRtc::read_register(uint8_t index) {
    switch (index) {
    case kSeconds:
        return encode(now().second);
    case kMinutes:
        return encode(now().minute);
    case kHours:
        return encode_hour(now().hour);
    case kWeekday:
        return encode(weekday(now()));
    case kDayOfMonth:
        return encode(now().day);
    case kMonth:
        return encode(now().month);
    case kYear:
        return encode(now().year % 100);
    case kCentury:
        return encode(now().year / 100);
    case kRegisterA:
        return ram_[kRegisterA] & static_cast<uint8_t>(~kRegisterAUpdateInProgress);
    case kRegisterC:
        // Interrupt flags, cleared by reading; nothing ever raises one.
        return 0;
    case kRegisterD:
        return kRegisterDValidRamAndTime;
    default:
        return ram_[index];
    }
}

void CmosRtc::write_register(uint8_t index, uint8_t value) {
    switch (index) {
    case kSeconds:
    case kMinutes:
    case kHours:
    case kDayOfMonth:
    case kMonth:
    case kYear:
    case kCentury:
        write_time_field(index, value);
        return;
    case kWeekday:
        return;  // derived from the date
    case kRegisterA:
        ram_[kRegisterA] = value & static_cast<uint8_t>(~kRegisterAUpdateInProgress);
        return;
    case kRegisterB:
        write_register_b(value);
        return;
    case kRegisterC:
    case kRegisterD:
        return;  // read-only
    default:
        ram_[index] = value;
        return;
    }
}

void CmosRtc::write_register_b(uint8_t value) {
    const bool was_set = (ram_[kRegisterB] & kRegisterBSet) != 0;
    const bool set = (value & kRegisterBSet) != 0;
    if (set) {
        // The chip clears the update interrupt enable whenever SET is set.
        value &= static_cast<uint8_t>(~kRegisterBUpdateIrq);
    }
    if (set && !was_set) {
        frozen_ = now();
    } else if (!set && was_set && frozen_) {
        offset_ = to_time_t(*frozen_) - clock_();
        frozen_.reset();
    }
    ram_[kRegisterB] = value;
}

void CmosRtc::write_time_field(uint8_t index, uint8_t value) {
    // One clock reading for both directions, so the offset does not absorb
    // a tick that happens in between.
    const std::time_t clock_now = frozen_ ? 0 : clock_();
    DateTime time = frozen_ ? *frozen_ : to_date_time(clock_now + offset_);
    const int number = decode(value);
    switch (index) {
    case kSeconds:
        time.second = number;
        break;
    case kMinutes:
        time.minute = number;
        break;
    case kHours:
        time.hour = decode_hour(value);
        break;
    case kDayOfMonth:
        time.day = number;
        break;
    case kMonth:
        time.month = number;
        break;
    case kYear:
        time.year = time.year / 100 * 100 + number;
        break;
    case kCentury:
        time.year = number * 100 + time.year % 100;
        break;
    default:
        return;
    }
    if (frozen_) {
        *frozen_ = time;
    } else {
        offset_ = to_time_t(time) - clock_now;
    }
}

CmosRtc::DateTime CmosRtc::now() const {
    if (frozen_) {
        return *frozen_;
    }
    return to_date_time(clock_() + offset_);
}

uint8_t CmosRtc::encode(int value) const {
    if (ram_[kRegisterB] & kRegisterBBinary) {
        return static_cast<uint8_t>(value);
    }
    return static_cast<uint8_t>(((value / 10) << 4) | (value % 10));
}

int CmosRtc::decode(uint8_t value) const {
    if (ram_[kRegisterB] & kRegisterBBinary) {
        return value;
    }
    return (value >> 4) * 10 + (value & 0x0f);
}

uint8_t CmosRtc::encode_hour(int hour) const {
    if (ram_[kRegisterB] & kRegisterB24Hour) {
        return encode(hour);
    }
    // 12-hour clock: 12 AM is midnight, 12 PM is noon.
    const int twelve = hour % 12 == 0 ? 12 : hour % 12;
    return static_cast<uint8_t>(encode(twelve) | (hour >= 12 ? kHourPm : 0));
}

int CmosRtc::decode_hour(uint8_t value) const {
    if (ram_[kRegisterB] & kRegisterB24Hour) {
        return decode(value);
    }
    const bool pm = (value & kHourPm) != 0;
    return decode(value & static_cast<uint8_t>(~kHourPm)) % 12 + (pm ? 12 : 0);
}

CmosRtc::DateTime CmosRtc::to_date_time(std::time_t time) {
    using namespace std::chrono;
    const sys_seconds instant{seconds{time}};
    const sys_days date = floor<days>(instant);
    const year_month_day ymd{date};
    const auto second_of_day = static_cast<int>((instant - date).count());
    return DateTime{
        .year = static_cast<int>(ymd.year()),
        .month = static_cast<int>(static_cast<unsigned>(ymd.month())),
        .day = static_cast<int>(static_cast<unsigned>(ymd.day())),
        .hour = second_of_day / 3600,
        .minute = second_of_day / 60 % 60,
        .second = second_of_day % 60,
    };
}

std::time_t CmosRtc::to_time_t(const DateTime& time) {
    using namespace std::chrono;
    // Out-of-range fields carry into the next larger unit, so a guest that
    // writes nonsense gets some nearby time rather than an error.
    const year_month month = year{time.year} / January + months{time.month - 1};
    const sys_days date = sys_days{month / 1} + days{time.day - 1};
    const sys_seconds instant =
        date + hours{time.hour} + minutes{time.minute} + seconds{time.second};
    return static_cast<std::time_t>(instant.time_since_epoch().count());
}

int CmosRtc::weekday(const DateTime& time) {
    using namespace std::chrono;
    const sys_days date = floor<days>(sys_seconds{seconds{to_time_t(time)}});
    // The chip counts 1 = Sunday to 7 = Saturday.
    return static_cast<int>(std::chrono::weekday{date}.c_encoding()) + 1;
}

}  // namespace hv
