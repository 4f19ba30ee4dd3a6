#pragma once
// What the image parsers (boot_image.cpp for ELF and multiboot, bzimage.cpp
// for Linux) share: their error, which names the image, and reads of
// little-endian fields at offsets the caller has already checked.
#include "vmm/kvm/vmm_error.hpp"

#include <cstdint>
#include <cstring>
#include <span>
#include <string>

namespace hv {

[[noreturn]] inline void image_error(const std::string& name, const std::string& what) {
    throw VmmError("image '" + name + "': " + what);
}

// The caller guarantees [offset, offset + sizeof(T)) lies inside `file`.
template <class T>
T read_field(std::span<const std::uint8_t> file, std::uint64_t offset) {
    T value;
    std::memcpy(&value, file.data() + offset, sizeof value);
    return value;
}

} // namespace hv
