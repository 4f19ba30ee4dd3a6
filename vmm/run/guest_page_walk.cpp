#include "vmm/run/guest_page_walk.hpp"

#include "vmm/kvm/text_format.hpp"

namespace hv {
namespace {
constexpr std::uint64_t kPresent = 1, kLarge = 1u << 7;
constexpr std::uint64_t kAddrMask = 0x000ffffffffff000ull;
constexpr std::uint64_t kCr0Pg = 1ull << 31;
constexpr std::uint64_t kCr4Pae = 1u << 5, kCr4La57 = 1u << 12;
constexpr std::uint64_t kEferLma = 1u << 10;
} // namespace

std::variant<std::uint64_t, WalkFailure> translate_gva(const GuestMemory& memory, const kvm_sregs& sregs,
                                                       std::uint64_t gva) {
    if (!(sregs.cr0 & kCr0Pg)) return (gva + sregs.cs.base) & 0xffffffffull; // paging off: linear = physical
    if (!(sregs.efer & kEferLma) || !(sregs.cr4 & kCr4Pae))
        return WalkFailure{"32-bit paging is not walked by the diagnostics"};
    if (sregs.cr4 & kCr4La57) return WalkFailure{"5-level paging is not walked by the diagnostics"};
    static constexpr const char* level_names[] = {"PML4", "PDPT", "PD", "PT"};
    std::uint64_t table = sregs.cr3 & kAddrMask;
    for (int level = 0; level < 4; ++level) {
        const unsigned shift = 39 - 9 * level;
        const std::uint64_t entry_gpa = table + ((gva >> shift) & 0x1ff) * 8;
        const auto entry = memory.read_obj<std::uint64_t>(entry_gpa);
        if (!entry)
            return WalkFailure{std::string(level_names[level]) + " entry at " + hex(entry_gpa) + " is outside guest RAM"};
        if (!(*entry & kPresent))
            return WalkFailure{hex(gva) + " is not mapped (not present at " + level_names[level] + " level)"};
        if ((level == 1 || level == 2) && (*entry & kLarge)) {
            const std::uint64_t page_mask = (1ull << shift) - 1;
            return ((*entry & kAddrMask) & ~page_mask) | (gva & page_mask);
        }
        table = *entry & kAddrMask;
    }
    return table | (gva & 0xfff);
}

std::vector<std::uint8_t> read_guest_virtual(const GuestMemory& memory, const kvm_sregs& sregs, std::uint64_t gva,
                                             std::size_t len, std::string* failure) {
    std::vector<std::uint8_t> out;
    while (out.size() < len) {
        const std::uint64_t va = gva + out.size();
        auto gpa = translate_gva(memory, sregs, va);
        if (auto* f = std::get_if<WalkFailure>(&gpa)) {
            if (failure) *failure = f->why;
            break;
        }
        const std::uint64_t pa = std::get<std::uint64_t>(gpa);
        const std::size_t in_page = std::min<std::size_t>(len - out.size(), 0x1000 - (va & 0xfff));
        const std::size_t readable = pa < memory.size() ? std::min<std::uint64_t>(in_page, memory.size() - pa) : 0;
        if (readable) {
            auto bytes = memory.span(pa, readable);
            out.insert(out.end(), bytes->begin(), bytes->end());
        }
        if (readable < in_page) {
            if (failure)
                *failure = "guest-physical " + hex(pa + readable) + " (from virtual " + hex(va + readable) +
                           ") is outside guest RAM";
            break;
        }
    }
    return out;
}

} // namespace hv
