#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <ctime>
#include <functional>
#include <mutex>
#include <optional>
#include <span>

#include "devices/io_device.hpp"

namespace hv {

// The PC's real-time clock and CMOS RAM (a Motorola MC146818): port 0x70
// selects one of 128 bytes, port 0x71 reads or writes it. Bit 7 of the index
// written to port 0x70 gates NMIs on PCs; it is kept apart and is not part of
// the index. Port 0x70 is write-only; reads return 0xff.
//
// Register it once at `port` with `size` 2. The chip is an 8-bit device; a
// wider access is split into byte accesses to consecutive ports, as the PC's
// ISA bus does, and bytes past offset 1 read as 0xff and are ignored.
//
// The time registers are not stored: every read derives them from the
// injected clock plus an offset, in BCD or binary and in 24- or 12-hour
// form as register B currently says. A guest write to a time register moves
// the offset so that later reads show the written value, advancing with the
// clock. While register B's SET bit is set the clock stands still and writes
// edit the frozen date field by field, so a guest may pass through invalid
// dates (day 31 while the month still says February) on its way to a valid
// one; clearing SET restarts the clock from the edited date. The weekday is
// always computed from the date; writes to it are ignored.
//
// The update cycle is not modelled: register A's update-in-progress bit
// always reads 0, so guests never wait for it. No interrupts are generated
// (there is no IRQ 8 output): register C always reads 0. Register D reports
// valid RAM and time. A reader crossing a second boundary between two
// registers can see a torn time, as with real hardware read without the UIP
// protocol; Linux re-reads the seconds to detect this.
//
// Everything else (alarms, the shutdown status byte 0x0F, the memory size
// bytes filled in at construction) is plain RAM the guest may rewrite.
//
// Threading: every entry point takes the device's mutex, and the clock is
// called with it held; it must not call back into this device.
class CmosRtc final : public IoDevice {
public:
    // Seconds since the Unix epoch, UTC.
    using Clock = std::function<std::time_t()>;

    static constexpr uint16_t port = 0x70;
    static constexpr uint64_t size = 2;
    static constexpr std::size_t cmos_bytes = 128;

    // guest_ram_bytes sets the memory size bytes; guest RAM is taken to be
    // contiguous from address 0 (no hole below 4 GiB), as the VMM lays it
    // out. An empty clock means host_utc_time.
    explicit CmosRtc(uint64_t guest_ram_bytes, Clock clock = host_utc_time);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

    // Whether the guest's last index write asked for NMIs to be masked. The
    // VMM injects no NMIs today; this records the request.
    bool nmi_disabled() const;

    static std::time_t host_utc_time();

private:
    // A calendar date and time of day, in plain numbers. Fields may hold
    // out-of-range values while the guest edits a frozen clock.
    struct DateTime {
        int year;
        int month;   // 1-12
        int day;     // 1-31
        int hour;    // 0-23
        int minute;
        int second;
    };

    uint8_t read_register(uint8_t index);
    void write_register(uint8_t index, uint8_t value);
    void write_register_b(uint8_t value);
    void write_time_field(uint8_t index, uint8_t value);

    DateTime now() const;
    uint8_t encode(int value) const;
    int decode(uint8_t value) const;
    uint8_t encode_hour(int hour) const;
    int decode_hour(uint8_t value) const;

    static DateTime to_date_time(std::time_t time);
    static std::time_t to_time_t(const DateTime& time);
    static int weekday(const DateTime& time);

    mutable std::mutex mutex_;
    Clock clock_;
    std::time_t offset_ = 0;         // guest time minus clock time
    std::optional<DateTime> frozen_;  // the stopped clock while register B's SET bit is set
    uint8_t index_ = 0;
    bool nmi_disabled_ = false;
    std::array<uint8_t, cmos_bytes> ram_{};
};

}  // namespace hv
