#pragma once
// Memslots: guest ranges mapped onto host ranges, as KVM memslots map gpa
// onto hva. Two slots may alias one host range. Lookups go both ways:
// guest address -> host address (the fault path) and host range -> the
// guest ranges that map it (the zap path).
#include <cstdint>
#include <map>
#include <optional>
#include <stdexcept>
#include <vector>

namespace hv::mmu {

struct Memslot {
    std::uint32_t id = 0;
    std::uint64_t guest_start = 0;
    std::uint64_t size = 0;
    std::uint64_t host_start = 0;
    bool writable = true;
    std::uint64_t guest_end() const { return guest_start + size; }
    std::uint64_t host_end() const { return host_start + size; }
};

struct GuestRange {
    std::uint64_t start = 0, end = 0;
    bool operator==(const GuestRange&) const = default;
};

class MemslotError : public std::invalid_argument {
public:
    using std::invalid_argument::invalid_argument;
};

// Not thread-safe by itself: the shadow MMU changes slots under its
// exclusive lock (after zapping what they covered) and reads them under
// its shared one.
class MemslotTable {
public:
    // Guest and host addresses live below 2^47 (48-bit tables, canonical lower half).
    static constexpr std::uint64_t kAddressLimit = 1ull << 47;

    // Throws MemslotError when the slot is empty, not 4 KiB aligned, past
    // kAddressLimit, its id is taken, or it overlaps another slot's guest range.
    void add(const Memslot& slot);
    // Adds a slot over the same host range as `existing` at another guest address.
    void alias(std::uint32_t existing, std::uint32_t id, std::uint64_t guest_start);
    // Removes the slot and returns it; throws MemslotError for an unknown id.
    Memslot remove(std::uint32_t id);

    const Memslot* find_guest(std::uint64_t guest_address) const;
    std::optional<std::uint64_t> guest_to_host(std::uint64_t guest_address) const;
    // Guest ranges whose host side overlaps [host_start, host_end), clipped to it.
    std::vector<GuestRange> host_to_guest(std::uint64_t host_start, std::uint64_t host_end) const;
    std::vector<Memslot> slots() const;
    std::size_t size() const { return by_guest_.size(); }

private:
    std::map<std::uint64_t, Memslot> by_guest_; // keyed by guest_start
};

} // namespace hv::mmu
