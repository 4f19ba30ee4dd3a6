#pragma once
// Shared by the boot-setup tests (test_boot_setup_*.cpp): size constants,
// reads of guest memory that fail the test when out of RAM, and guest RAM
// above 4 GiB where the host allows it.
#include <doctest/doctest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>

#include "vmm/kvm/guest_memory.hpp"
#include "vmm/kvm/vmm_error.hpp"

namespace hv::test::boot_setup {

inline constexpr std::uint64_t MiB = 1ull << 20, GiB = 1ull << 30;

// Helpers that assert only when the read fails, so the assertion count
// reflects the checks the tests make.
template <class T>
T read_obj(const GuestMemory& mem, std::uint64_t gpa) {
    const auto v = mem.read_obj<T>(gpa);
    if (!v) FAIL("guest-physical " << gpa << " is outside RAM");
    return *v;
}
inline std::uint64_t read_u64(const GuestMemory& mem, std::uint64_t gpa) {
    return read_obj<std::uint64_t>(mem, gpa);
}

// Guest RAM above 4 GiB for the tests that need it. The mapping is lazy
// (only the pages written are ever touched), but a host with strict
// overcommit (vm.overcommit_memory=2) may still refuse it; such a host
// cannot run these tests, which is reported rather than failed.
inline std::optional<GuestMemory> big_memory(std::uint64_t size) {
    try {
        return std::optional<GuestMemory>(std::in_place, size);
    } catch (const hv::VmmError& e) {
        MESSAGE("skipped: " << std::string(e.what()));
        return std::nullopt;
    }
}

} // namespace hv::test::boot_setup
