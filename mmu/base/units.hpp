#pragma once
// "0x1f": the one number format of the MMU library's error messages.
#include <cstdint>
#include <cstdio>
#include <string>

namespace hv::mmu {

inline std::string hex(std::uint64_t value) {
    char buf[24];
    std::snprintf(buf, sizeof buf, "0x%llx", static_cast<unsigned long long>(value));
    return buf;
}

} // namespace hv::mmu
