#pragma once
// Translates a guest-virtual address the way the guest's CPU would, by
// walking the guest's own page tables through GuestMemory's bounds checks.
// Used for diagnostics (reading the code at RIP), never for emulation.
#include "vmm/kvm/guest_memory.hpp"

#include <cstdint>
#include <linux/kvm.h>
#include <string>
#include <variant>
#include <vector>

namespace hv {

struct WalkFailure {
    std::string why; // "not present at PML4 level", "page table at 0x... is outside guest RAM", ...
};

std::variant<std::uint64_t, WalkFailure> translate_gva(const GuestMemory& memory, const kvm_sregs& sregs,
                                                       std::uint64_t gva);

// Up to `len` bytes starting at guest-virtual `gva`, stopping at the first
// unreadable byte; `failure` says why it stopped early.
std::vector<std::uint8_t> read_guest_virtual(const GuestMemory& memory, const kvm_sregs& sregs, std::uint64_t gva,
                                             std::size_t len, std::string* failure);

} // namespace hv
