#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_set>

#include "devices/bus_error.hpp"
#include "devices/io_device.hpp"

namespace hv {

enum class BusResult { Handled, Unclaimed };

// Routes accesses in one address space (one instance for port I/O, one for
// MMIO) to the device whose registered range contains the address.
//
// Threading: all add() calls must happen before any vCPU thread starts;
// after that the range map is immutable, so read(), write() and device_at()
// may run concurrently from any number of threads without locking. add() is
// NOT safe to call concurrently with anything else. set_unclaimed_sink() is
// thread-safe at any time.
class Bus {
public:
    // Once this many distinct unclaimed addresses have been reported, further
    // new ones are summarised by a single message: a guest scanning an
    // address space must not make the VMM's memory grow without bound.
    static constexpr std::size_t max_reported_unclaimed = 4096;

    explicit Bus(std::string name);

    Bus(const Bus&) = delete;
    Bus& operator=(const Bus&) = delete;

    // Claims [base, base + size) for device; device_name is used in messages
    // and returned by device_at(). The device must outlive the bus. Throws
    // BusError on size 0, on a range running past 2^64, and on overlap with
    // an existing registration (the message names both devices and ranges).
    void add(uint64_t base, uint64_t size, IoDevice& device, std::string device_name);

    // The device claiming addr receives the whole access at offset
    // addr - base, even if the access runs past the end of its range.
    // Unclaimed reads return all ones, as an open bus does on PCs.
    BusResult read(uint64_t addr, std::span<uint8_t> data);
    BusResult write(uint64_t addr, std::span<const uint8_t> data);

    // Receives one line (without trailing newline) the first time each
    // unclaimed address is read or written. The default sink writes to
    // stderr. The sink may be called concurrently from several threads.
    void set_unclaimed_sink(std::function<void(std::string_view)> sink);

    std::optional<std::string_view> device_at(uint64_t addr) const;

    const std::string& name() const { return name_; }

private:
    struct Range {
        uint64_t base;
        uint64_t last;  // inclusive, so a range may end exactly at 2^64 - 1
        IoDevice* device;
        std::string name;
    };

    const Range* find(uint64_t addr) const;
    void report_unclaimed(bool is_write, uint64_t addr, std::span<const uint8_t> data);

    std::string name_;
    std::map<uint64_t, Range> ranges_;  // keyed by base; ranges never overlap

    std::mutex unclaimed_mutex_;  // guards the members below
    std::function<void(std::string_view)> unclaimed_sink_;
    std::unordered_set<uint64_t> reported_unclaimed_;
    bool reported_limit_ = false;
};

}  // namespace hv
