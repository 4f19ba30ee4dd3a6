#pragma once
// Guest RAM: one host mapping backing guest-physical [0, size). Every access
// to guest memory on behalf of a guest-supplied address goes through the
// bounds-checked accessors here; nothing else in the VMM does pointer
// arithmetic on guest addresses.
#include "vmm/kvm/memory_mapping.hpp"

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <type_traits>

namespace hv {

class GuestMemory {
public:
    // Throws VmmError when the host cannot map `size` bytes.
    explicit GuestMemory(std::uint64_t size);

    std::uint64_t size() const { return mapping_.size(); }

    // True when [gpa, gpa+len) lies inside RAM (overflow-safe).
    bool contains(std::uint64_t gpa, std::uint64_t len) const {
        return gpa <= size() && len <= size() - gpa;
    }
    // The bytes of [gpa, gpa+len), or nullopt when any of it is outside RAM.
    std::optional<std::span<std::uint8_t>> span(std::uint64_t gpa, std::uint64_t len) {
        if (!contains(gpa, len)) return std::nullopt;
        return std::span<std::uint8_t>(mapping_.data() + gpa, len);
    }
    std::optional<std::span<const std::uint8_t>> span(std::uint64_t gpa, std::uint64_t len) const {
        if (!contains(gpa, len)) return std::nullopt;
        return std::span<const std::uint8_t>(mapping_.data() + gpa, len);
    }

    bool read(std::uint64_t gpa, std::span<std::uint8_t> out) const {
        auto src = span(gpa, out.size());
        if (!src) return false;
        if (!out.empty()) std::memcpy(out.data(), src->data(), out.size());
        return true;
    }
    bool write(std::uint64_t gpa, std::span<const std::uint8_t> in) {
        auto dst = span(gpa, in.size());
        if (!dst) return false;
        if (!in.empty()) std::memcpy(dst->data(), in.data(), in.size());
        return true;
    }
    template <class T>
    std::optional<T> read_obj(std::uint64_t gpa) const {
        static_assert(std::is_trivially_copyable_v<T>);
        T value;
        if (!read(gpa, std::span(reinterpret_cast<std::uint8_t*>(&value), sizeof value)))
            return std::nullopt;
        return value;
    }
    template <class T>
    bool write_obj(std::uint64_t gpa, const T& value) {
        static_assert(std::is_trivially_copyable_v<T>);
        return write(gpa, std::span(reinterpret_cast<const std::uint8_t*>(&value), sizeof value));
    }

    // An 8-byte aligned word of RAM that the VMM and the guest both access
    // with atomics (std::atomic_ref), or nullptr when gpa is outside RAM or
    // not aligned.
    std::uint64_t* word(std::uint64_t gpa) const {
        if (gpa % sizeof(std::uint64_t) || !contains(gpa, sizeof(std::uint64_t))) return nullptr;
        return reinterpret_cast<std::uint64_t*>(mapping_.data() + gpa);
    }

    // Asks the host not to back RAM with transparent huge pages (shadow
    // mode: see ShadowVm). Best effort: returns false when the host refuses.
    bool avoid_huge_pages();

    // Only for handing the region to KVM_SET_USER_MEMORY_REGION.
    std::uint8_t* host_base() const { return mapping_.data(); }

private:
    Mapping mapping_;
};

} // namespace hv
