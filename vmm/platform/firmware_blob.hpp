#pragma once
// A blob of firmware tables (ACPI, MP) being built: zero-filled to its
// planned size, little-endian stores at offsets (every store bounds-checked:
// a layout mistake throws std::out_of_range instead of writing past the
// end), and the 8-bit checksums both specifications use.
#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>
#include <utility>
#include <vector>

namespace hv {

class FirmwareBlob {
public:
    explicit FirmwareBlob(std::size_t size) : bytes_(size, 0) {}

    void u8(std::size_t at, std::uint8_t value) { bytes_.at(at) = value; }
    void u16(std::size_t at, std::uint16_t value) { store(at, value, 2); }
    void u32(std::size_t at, std::uint32_t value) { store(at, value, 4); }
    void u64(std::size_t at, std::uint64_t value) { store(at, value, 8); }
    void text(std::size_t at, std::string_view chars) {
        for (std::size_t i = 0; i < chars.size(); ++i) u8(at + i, static_cast<std::uint8_t>(chars[i]));
    }
    void bytes(std::size_t at, std::span<const std::uint8_t> data) {
        for (std::size_t i = 0; i < data.size(); ++i) u8(at + i, data[i]);
    }

    // Stores at checksum_at the byte that makes [at, at + length) sum to 0
    // modulo 256; the byte itself must still be 0.
    void checksum(std::size_t at, std::size_t length, std::size_t checksum_at) {
        std::uint8_t sum = 0;
        for (std::size_t i = at; i < at + length; ++i) sum = static_cast<std::uint8_t>(sum + bytes_.at(i));
        u8(checksum_at, static_cast<std::uint8_t>(-sum));
    }

    std::vector<std::uint8_t> take() { return std::move(bytes_); }

private:
    void store(std::size_t at, std::uint64_t value, std::size_t width) {
        for (std::size_t i = 0; i < width; ++i) u8(at + i, static_cast<std::uint8_t>(value >> (8 * i)));
    }

    std::vector<std::uint8_t> bytes_;
};

} // namespace hv
