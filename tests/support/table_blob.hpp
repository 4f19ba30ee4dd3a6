#pragma once
// A built firmware table blob (ACPI, MP) and the reads a parser needs, for
// the tests that parse one back. Every read is bounds-checked (vector::at),
// so a pointer running off the blob fails the test with an exception
// instead of reading garbage.
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace hv::test {

struct TableBlob {
    std::vector<std::uint8_t> bytes;
    std::uint64_t base = 0; // the guest-physical address of bytes[0]

    std::uint64_t le(std::size_t at, std::size_t width) const {
        std::uint64_t value = 0;
        for (std::size_t i = 0; i < width; ++i) value |= std::uint64_t{bytes.at(at + i)} << (8 * i);
        return value;
    }
    std::uint8_t u8(std::size_t at) const { return bytes.at(at); }
    std::uint16_t u16(std::size_t at) const { return static_cast<std::uint16_t>(le(at, 2)); }
    std::uint32_t u32(std::size_t at) const { return static_cast<std::uint32_t>(le(at, 4)); }
    std::uint64_t u64(std::size_t at) const { return le(at, 8); }
    std::string text(std::size_t at, std::size_t n) const {
        std::string s;
        for (std::size_t i = 0; i < n; ++i) s += static_cast<char>(bytes.at(at + i));
        return s;
    }
    // The 8-bit sum of n bytes from `at` (0 for a valid checksummed structure).
    std::uint8_t sum(std::size_t at, std::size_t n) const {
        std::uint8_t s = 0;
        for (std::size_t i = 0; i < n; ++i) s = static_cast<std::uint8_t>(s + bytes.at(at + i));
        return s;
    }
};

} // namespace hv::test
