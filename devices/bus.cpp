#include "devices/bus.hpp"

#include "mmu/base/units.hpp"

#include <cstdio>
#include <iostream>
#include <utility>

#include "devices/little_endian.hpp"

namespace hv {
namespace {
using mmu::hex;

// Inclusive bounds: the exclusive end of a range touching 2^64 is not
// representable in 64 bits.
std::string describe(std::string_view device_name, uint64_t first, uint64_t last) {
    return "\"" + std::string(device_name) + "\" [" + hex(first) + ", " + hex(last) + "]";
}

void write_to_stderr(std::string_view line) {
    // One write per line so lines from different threads do not interleave.
    std::string text(line);
    text += '\n';
    std::cerr << text << std::flush;
}

}  // namespace

Bus::Bus(std::string name) : name_(std::move(name)), unclaimed_sink_(write_to_stderr) {}

void Bus::add(uint64_t base, uint64_t size, IoDevice& device, std::string device_name) {
    const std::string prefix = name_ + " bus: cannot add \"" + device_name + "\" at " + hex(base);
    if (size == 0) {
        throw BusError(prefix + ": expected a size of at least 1, found 0");
    }
    const uint64_t last = base + (size - 1);
    if (last < base) {
        throw BusError(prefix + " with size " + hex(size) +
                       ": expected the range to end at or below 0xffffffffffffffff, "
                       "but it wraps around past 2^64");
    }

    // Ranges are disjoint and sorted, so the only candidate for overlap is
    // the registration with the greatest base not above our last byte: it
    // has the greatest end of all ranges starting at or before `last`.
    auto next = ranges_.upper_bound(last);
    if (next != ranges_.begin()) {
        const Range& other = std::prev(next)->second;
        if (other.last >= base) {
            throw BusError(name_ + " bus: cannot add " + describe(device_name, base, last) +
                           ": expected a free range, but it overlaps " +
                           describe(other.name, other.base, other.last));
        }
    }
    ranges_.emplace(base, Range{base, last, &device, std::move(device_name)});
}

const Bus::Range* Bus::find(uint64_t addr) const {
    auto next = ranges_.upper_bound(addr);
    if (next == ranges_.begin()) {
        return nullptr;
    }
    const Range& range = std::prev(next)->second;
    return addr <= range.last ? &range : nullptr;
}

BusResult Bus::read(uint64_t addr, std::span<uint8_t> data) {
    if (const Range* range = find(addr)) {
        range->device->read(addr - range->base, data);
        return BusResult::Handled;
    }
    for (auto& byte : data) {
        byte = 0xff;
    }
    report_unclaimed(false, addr, data);
    return BusResult::Unclaimed;
}

BusResult Bus::write(uint64_t addr, std::span<const uint8_t> data) {
    if (const Range* range = find(addr)) {
        range->device->write(addr - range->base, data);
        return BusResult::Handled;
    }
    report_unclaimed(true, addr, data);
    return BusResult::Unclaimed;
}

std::optional<std::string_view> Bus::device_at(uint64_t addr) const {
    if (const Range* range = find(addr)) {
        return std::string_view(range->name);
    }
    return std::nullopt;
}

void Bus::set_unclaimed_sink(std::function<void(std::string_view)> sink) {
    std::lock_guard lock(unclaimed_mutex_);
    unclaimed_sink_ = std::move(sink);
}

void Bus::report_unclaimed(bool is_write, uint64_t addr, std::span<const uint8_t> data) {
    std::string message;
    std::function<void(std::string_view)> sink;
    {
        std::lock_guard lock(unclaimed_mutex_);
        if (reported_unclaimed_.contains(addr)) {
            return;
        }
        if (reported_unclaimed_.size() >= max_reported_unclaimed) {
            if (reported_limit_) {
                return;
            }
            reported_limit_ = true;
            message = name_ + " bus: more than " + std::to_string(max_reported_unclaimed) +
                      " distinct unclaimed addresses accessed; not reporting further ones";
        } else {
            reported_unclaimed_.insert(addr);
            message = name_ + " bus: unclaimed " + std::to_string(data.size()) + "-byte " +
                      (is_write ? "write of " + hex(load_le(data)) + " to " : "read from ") +
                      hex(addr) + " (reported once per address)";
        }
        sink = unclaimed_sink_;
    }
    // Called outside the lock so a slow or re-entrant sink cannot stall or
    // deadlock other vCPUs.
    if (sink) {
        sink(message);
    }
}

}  // namespace hv
