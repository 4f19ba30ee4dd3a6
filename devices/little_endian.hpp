#pragma once

#include <cstdint>
#include <span>

// x86 port and MMIO accesses carry their value as little-endian bytes; these
// helpers convert without caring about the host's byte order or alignment.
namespace hv {

// Zero-extends up to the first 8 bytes of bytes.
inline uint64_t load_le(std::span<const uint8_t> bytes) {
    uint64_t value = 0;
    const std::size_t n = bytes.size() < 8 ? bytes.size() : 8;
    for (std::size_t i = 0; i < n; ++i) {
        value |= uint64_t{bytes[i]} << (8 * i);
    }
    return value;
}

// Writes the low bytes.size() bytes of value (at most 8; the rest become 0).
inline void store_le(uint64_t value, std::span<uint8_t> bytes) {
    for (std::size_t i = 0; i < bytes.size(); ++i) {
        bytes[i] = i < 8 ? static_cast<uint8_t>(value >> (8 * i)) : 0;
    }
}

}  // namespace hv
