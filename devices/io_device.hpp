#pragma once

#include <cstdint>
#include <span>

namespace hv {

// A device that answers port I/O or MMIO accesses routed to it by a Bus.
//
// Contract with the Bus:
//  * offset is relative to the base the device was registered at and is
//    always smaller than the registered size.
//  * data.size() is 1, 2, 4 or 8. An access may still run past the end of
//    the registered range (e.g. a 4-byte access to the last byte); the bus
//    routes it by its first byte, so devices must tolerate
//    offset + data.size() > size.
//  * read() must fill every byte of data.
//  * Calls arrive concurrently from several vCPU threads, so implementations
//    must be thread-safe.
class IoDevice {
public:
    virtual ~IoDevice() = default;

    virtual void read(uint64_t offset, std::span<uint8_t> data) = 0;
    virtual void write(uint64_t offset, std::span<const uint8_t> data) = 0;
};

}  // namespace hv
