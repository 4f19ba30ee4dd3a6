#pragma once
// Writes of boot structures into guest RAM for the image loaders
// (boot_setup.cpp, linux_boot.cpp). Their addresses come from the VMM's own
// layout, already checked against the RAM size, so a write that does not fit
// is an internal error; only write_string checks a user-supplied length.
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <cstdint>
#include <span>
#include <string>

namespace hv {

inline void must_write(GuestMemory& mem, std::uint64_t gpa, std::span<const std::uint8_t> bytes, const char* what) {
    if (!mem.write(gpa, bytes))
        throw VmmError(std::string("internal: ") + what + " at " + hex(gpa) + " does not fit in guest RAM");
}

template <class T>
void must_write_obj(GuestMemory& mem, std::uint64_t gpa, const T& v, const char* what) {
    must_write(mem, gpa, std::span(reinterpret_cast<const std::uint8_t*>(&v), sizeof v), what);
}

// Writes `s` with its NUL at `gpa`; `max` counts the NUL. Returns gpa.
inline std::uint64_t write_string(GuestMemory& mem, std::uint64_t gpa, const std::string& s, std::uint64_t max,
                                  const char* what) {
    if (s.size() + 1 > max)
        throw VmmError(std::string(what) + " is " + std::to_string(s.size()) + " bytes; at most " +
                       std::to_string(max - 1) + " are supported");
    must_write(mem, gpa, std::span(reinterpret_cast<const std::uint8_t*>(s.c_str()), s.size() + 1), what);
    return gpa;
}

inline std::uint64_t align_up(std::uint64_t v, std::uint64_t a) { return (v + a - 1) & ~(a - 1); }

} // namespace hv
