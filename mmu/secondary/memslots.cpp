#include "mmu/secondary/memslots.hpp"

#include "mmu/base/units.hpp"

#include <algorithm>
#include <cstdio>
#include <string>

namespace hv::mmu {
namespace {
std::string describe(const Memslot& s) {
    return "slot " + std::to_string(s.id) + " guest [" + hex(s.guest_start) + ", " + hex(s.guest_end()) +
           ") -> host " + hex(s.host_start);
}
} // namespace

void MemslotTable::add(const Memslot& s) {
    if (s.size == 0) throw MemslotError("memslot " + std::to_string(s.id) + ": size is 0");
    if ((s.guest_start | s.size | s.host_start) & 0xfff)
        throw MemslotError(describe(s) + " size " + hex(s.size) + ": addresses and size must be 4 KiB aligned");
    if (s.guest_start >= kAddressLimit || s.size > kAddressLimit - s.guest_start || s.host_start >= kAddressLimit ||
        s.size > kAddressLimit - s.host_start)
        throw MemslotError(describe(s) + " size " + hex(s.size) + ": must lie below " + hex(kAddressLimit));
    for (const auto& [start, other] : by_guest_) {
        if (other.id == s.id) throw MemslotError("memslot id " + std::to_string(s.id) + " is already in use");
        if (s.guest_start < other.guest_end() && other.guest_start < s.guest_end())
            throw MemslotError(describe(s) + " overlaps " + describe(other));
    }
    by_guest_.emplace(s.guest_start, s);
}

void MemslotTable::alias(std::uint32_t existing, std::uint32_t id, std::uint64_t guest_start) {
    auto it = std::find_if(by_guest_.begin(), by_guest_.end(), [&](auto& kv) { return kv.second.id == existing; });
    if (it == by_guest_.end()) throw MemslotError("alias: no memslot with id " + std::to_string(existing));
    Memslot copy = it->second;
    copy.id = id;
    copy.guest_start = guest_start;
    add(copy);
}

Memslot MemslotTable::remove(std::uint32_t id) {
    auto it = std::find_if(by_guest_.begin(), by_guest_.end(), [&](auto& kv) { return kv.second.id == id; });
    if (it == by_guest_.end()) throw MemslotError("remove: no memslot with id " + std::to_string(id));
    Memslot s = it->second;
    by_guest_.erase(it);
    return s;
}

const Memslot* MemslotTable::find_guest(std::uint64_t a) const {
    auto it = by_guest_.upper_bound(a);
    if (it == by_guest_.begin()) return nullptr;
    --it;
    return a < it->second.guest_end() ? &it->second : nullptr;
}

std::optional<std::uint64_t> MemslotTable::guest_to_host(std::uint64_t a) const {
    const Memslot* s = find_guest(a);
    if (!s) return std::nullopt;
    return s->host_start + (a - s->guest_start);
}

std::vector<GuestRange> MemslotTable::host_to_guest(std::uint64_t hs, std::uint64_t he) const {
    std::vector<GuestRange> out;
    for (const auto& [start, s] : by_guest_) {
        const std::uint64_t lo = std::max(hs, s.host_start), hi = std::min(he, s.host_end());
        if (lo >= hi) continue;
        out.push_back({s.guest_start + (lo - s.host_start), s.guest_start + (hi - s.host_start)});
    }
    return out;
}

std::vector<Memslot> MemslotTable::slots() const {
    std::vector<Memslot> out;
    for (const auto& [start, s] : by_guest_) out.push_back(s);
    return out;
}

} // namespace hv::mmu
