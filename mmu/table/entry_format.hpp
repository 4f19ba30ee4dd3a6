#pragma once
// Entry formats: small trait classes that know the bit layout of one kind of
// paging-structure entry and nothing else. The generic code (RadixTable, the
// host model, the shadow MMU) speaks only the vocabulary below: present,
// pfn, permissions, accessed/dirty, leaf/table construction. It never
// touches a bit, so a second format costs one class, not a second walker.
//
//   EptFormat     Intel EPT entries (SDM Vol. 3C, "EPT Paging-Structure
//                 Entries"): the secondary MMU of a VMX host.
//   X86PteFormat  x86-64 4-level paging entries (SDM Vol. 3A, "Formats of
//                 Paging-Structure Entries"): the host model's tables, and
//                 the secondary tables a KVM guest walks with CR3 = root.
//
// Every function is a static constexpr function over std::uint64_t. The
// permission decoders (readable, writable, executable, user) answer "what
// does this entry grant", so they are false for a non-present entry.
// make_leaf throws std::invalid_argument for a request the format cannot
// express (never silently granting more or less than asked).
#include "mmu/base/frame_space.hpp"

#include <concepts>
#include <cstdint>
#include <cstdio>
#include <stdexcept>
#include <string>

namespace hv::mmu {

// The rights of a mapping, in the common vocabulary.
struct Perms {
    bool read = false;
    bool write = false;
    bool exec = false;
    bool user = false; // user-mode (CPL 3) access allowed
    friend constexpr bool operator==(const Perms&, const Perms&) = default;
};

// "rwxu" with '-' for each right not granted, for messages and test output.
inline std::string to_string(const Perms& p) {
    return {p.read ? 'r' : '-', p.write ? 'w' : '-', p.exec ? 'x' : '-', p.user ? 'u' : '-'};
}

namespace detail {

// Out of line of the constexpr encoders, so they stay constant expressions
// on every path that does not throw.
[[noreturn]] inline void bad_entry(const char* format, const char* expected, const char* found_what,
                                   std::uint64_t found) {
    char b[200];
    std::snprintf(b, sizeof b, "%s entry: expected %s, found %s 0x%llx", format, expected, found_what,
                  static_cast<unsigned long long>(found));
    throw std::invalid_argument(b);
}

// Bits 51:12 of an entry hold the frame number (MAXPHYADDR is at most 52).
inline constexpr std::uint64_t kAddressField = 0x000F'FFFF'FFFF'F000ull;
inline constexpr Pfn kPfnLimit = Pfn{1} << 40;
// A 2 MiB frame starts at a multiple of 512 4 KiB frames.
inline constexpr Pfn kLargeFrameAlign = 512;

constexpr std::uint64_t checked_address(const char* format, Pfn pfn, bool large) {
    if (pfn >= kPfnLimit) bad_entry(format, "a pfn below 2^40 (bits 51:12)", "pfn", pfn);
    if (large && pfn % kLargeFrameAlign)
        bad_entry(format, "a 2 MiB aligned pfn (multiple of 512) for a large leaf", "pfn", pfn);
    return pfn << kFrameShift;
}

constexpr std::uint64_t with_bit(std::uint64_t e, std::uint64_t bit, bool on) { return on ? (e | bit) : (e & ~bit); }

} // namespace detail

// What the generic code requires of a format.
template <class F>
concept EntryFormat = requires(std::uint64_t e, Pfn pfn, Perms perms, bool b) {
    { F::name } -> std::convertible_to<const char*>;
    { F::pfn_mask } -> std::convertible_to<std::uint64_t>;
    { F::present(e) } -> std::same_as<bool>;
    { F::readable(e) } -> std::same_as<bool>;
    { F::writable(e) } -> std::same_as<bool>;
    { F::executable(e) } -> std::same_as<bool>;
    { F::user(e) } -> std::same_as<bool>;
    { F::perms(e) } -> std::same_as<Perms>;
    { F::pfn(e) } -> std::same_as<Pfn>;
    { F::is_large(e) } -> std::same_as<bool>;
    { F::accessed(e) } -> std::same_as<bool>;
    { F::dirty(e) } -> std::same_as<bool>;
    { F::make_leaf(pfn, perms, b) } -> std::same_as<std::uint64_t>;
    { F::make_table(pfn) } -> std::same_as<std::uint64_t>;
    { F::with_accessed(e, b) } -> std::same_as<std::uint64_t>;
    { F::with_dirty(e, b) } -> std::same_as<std::uint64_t>;
    { F::with_writable(e, b) } -> std::same_as<std::uint64_t>;
    { F::with_pfn(e, pfn) } -> std::same_as<std::uint64_t>;
};

// Intel EPT. There is no present bit: an entry is present when any of
// R/W/X is set. EPT has no privilege levels (the guest's own paging checks
// user/supervisor), so `user` is ignored when encoding and decodes as true
// for every present entry: EPT never denies an access for being user mode.
struct EptFormat {
    static constexpr const char* name = "EPT";

    static constexpr std::uint64_t kRead = 1ull << 0;
    static constexpr std::uint64_t kWrite = 1ull << 1;
    static constexpr std::uint64_t kExec = 1ull << 2;
    static constexpr unsigned kMemTypeShift = 3; // bits 5:3, leaves only
    static constexpr std::uint64_t kMemTypeMask = 7ull << kMemTypeShift;
    static constexpr std::uint64_t kIgnorePat = 1ull << 6; // leaves only
    static constexpr std::uint64_t kLarge = 1ull << 7;     // PDE/PDPTE: maps a 2 MiB / 1 GiB page
    static constexpr std::uint64_t kAccessed = 1ull << 8;  // with EPTP bit 6 (A/D enable)
    static constexpr std::uint64_t kDirty = 1ull << 9;     // leaves only
    static constexpr std::uint64_t pfn_mask = detail::kAddressField;
    static constexpr unsigned kMemTypeWriteBack = 6;

    static constexpr bool present(std::uint64_t e) { return (e & (kRead | kWrite | kExec)) != 0; }
    static constexpr bool readable(std::uint64_t e) { return (e & kRead) != 0; }
    static constexpr bool writable(std::uint64_t e) { return (e & kWrite) != 0; }
    static constexpr bool executable(std::uint64_t e) { return (e & kExec) != 0; }
    static constexpr bool user(std::uint64_t e) { return present(e); }
    static constexpr Perms perms(std::uint64_t e) { return {readable(e), writable(e), executable(e), user(e)}; }
    static constexpr Pfn pfn(std::uint64_t e) { return (e & pfn_mask) >> kFrameShift; }
    static constexpr bool is_large(std::uint64_t e) { return (e & kLarge) != 0; }
    static constexpr bool accessed(std::uint64_t e) { return (e & kAccessed) != 0; }
    static constexpr bool dirty(std::uint64_t e) { return (e & kDirty) != 0; }
    static constexpr unsigned memory_type(std::uint64_t e) { return unsigned((e & kMemTypeMask) >> kMemTypeShift); }
    static constexpr bool ignore_pat(std::uint64_t e) { return (e & kIgnorePat) != 0; }

    // A leaf mapping pfn write-back (type 6) with the guest PAT ignored, so
    // guest memory is cached as host memory is, whatever the guest's PAT says.
    // Write without read is an EPT misconfiguration (an exit, not a
    // violation), so it is refused here.
    static constexpr std::uint64_t make_leaf(Pfn pfn, Perms p, bool large = false) {
        if (p.write && !p.read)
            detail::bad_entry(name, "readable if writable (W without R is a misconfiguration)", "perms without R, pfn",
                              pfn);
        std::uint64_t e = detail::checked_address(name, pfn, large);
        e |= (p.read ? kRead : 0) | (p.write ? kWrite : 0) | (p.exec ? kExec : 0);
        e |= (std::uint64_t{kMemTypeWriteBack} << kMemTypeShift) | kIgnorePat;
        if (large) e |= kLarge;
        return e;
    }
    // A non-leaf entry: R/W/X all set, so the next level alone decides.
    // Bits 7:3 must be zero here (reserved in PML4Es, memory type / large
    // bit have no meaning for a table pointer). Accessed is set from the
    // start: a CPU walking the table with A/D enabled then never writes it
    // (see X86PteFormat).
    static constexpr std::uint64_t make_table(Pfn pfn) {
        return detail::checked_address(name, pfn, false) | kRead | kWrite | kExec | kAccessed;
    }
    static constexpr std::uint64_t with_accessed(std::uint64_t e, bool on) {
        return detail::with_bit(e, kAccessed, on);
    }
    static constexpr std::uint64_t with_dirty(std::uint64_t e, bool on) {
        return detail::with_bit(e, kDirty, on);
    }
    static constexpr std::uint64_t with_writable(std::uint64_t e, bool on) {
        return detail::with_bit(e, kWrite, on);
    }
    static constexpr std::uint64_t with_pfn(std::uint64_t e, Pfn pfn) {
        return (e & ~pfn_mask) | detail::checked_address(name, pfn, false);
    }
};

// x86-64 4-level paging. NX (bit 63) is honoured only with EFER.NXE = 1
// (the VMM sets it); without it bit 63 is reserved and a walk faults.
// Bit 7 is PS in a PDE/PDPTE but PAT in a 4 KiB PTE: is_large() is only
// meaningful above the leaf level, which is where the walkers ask it. In a
// 2 MiB leaf bit 12 is PAT, not address: make_leaf never sets it (pfn must
// be 2 MiB aligned), so pfn() is exact for the leaves this code builds.
struct X86PteFormat {
    static constexpr const char* name = "x86-64";

    static constexpr std::uint64_t kPresent = 1ull << 0;
    static constexpr std::uint64_t kWritable = 1ull << 1;
    static constexpr std::uint64_t kUser = 1ull << 2;
    static constexpr std::uint64_t kWriteThrough = 1ull << 3;
    static constexpr std::uint64_t kCacheDisable = 1ull << 4;
    static constexpr std::uint64_t kAccessed = 1ull << 5;
    static constexpr std::uint64_t kDirty = 1ull << 6;
    static constexpr std::uint64_t kLarge = 1ull << 7; // PS, in PDE/PDPTE
    static constexpr std::uint64_t kGlobal = 1ull << 8;
    static constexpr std::uint64_t kNoExec = 1ull << 63;
    static constexpr std::uint64_t pfn_mask = detail::kAddressField;

    static constexpr bool present(std::uint64_t e) { return (e & kPresent) != 0; }
    static constexpr bool readable(std::uint64_t e) { return present(e); }
    static constexpr bool writable(std::uint64_t e) { return present(e) && (e & kWritable) != 0; }
    static constexpr bool executable(std::uint64_t e) { return present(e) && (e & kNoExec) == 0; }
    static constexpr bool user(std::uint64_t e) { return present(e) && (e & kUser) != 0; }
    static constexpr Perms perms(std::uint64_t e) { return {readable(e), writable(e), executable(e), user(e)}; }
    static constexpr Pfn pfn(std::uint64_t e) { return (e & pfn_mask) >> kFrameShift; }
    static constexpr bool is_large(std::uint64_t e) { return (e & kLarge) != 0; }
    static constexpr bool accessed(std::uint64_t e) { return (e & kAccessed) != 0; }
    static constexpr bool dirty(std::uint64_t e) { return (e & kDirty) != 0; }
    static constexpr bool global(std::uint64_t e) { return (e & kGlobal) != 0; }

    // P | RW if write | US if user | NX unless exec | PS if large. PWT, PCD
    // and PAT stay 0: PAT entry 0, write-back with the architectural reset
    // PAT. A present x86 entry is always readable, so read = false cannot be
    // expressed (store 0 for "no access").
    static constexpr std::uint64_t make_leaf(Pfn pfn, Perms p, bool large = false) {
        if (!p.read)
            detail::bad_entry(name, "a readable leaf (a present entry always grants read)", "perms without read, pfn",
                              pfn);
        std::uint64_t e = detail::checked_address(name, pfn, large) | kPresent;
        if (p.write) e |= kWritable;
        if (p.user) e |= kUser;
        if (!p.exec) e |= kNoExec;
        if (large) e |= kLarge;
        return e;
    }
    // A non-leaf entry granting everything (P, RW, US, NX clear): rights are
    // the AND over levels, so the leaf alone decides. Accessed is set from
    // the start: a CPU walking the table sets A in every non-leaf entry it
    // uses, and a preset bit means it never writes the table (no A update
    // can race a zap or unlink and write a stale entry back).
    static constexpr std::uint64_t make_table(Pfn pfn) {
        return detail::checked_address(name, pfn, false) | kPresent | kWritable | kUser | kAccessed;
    }
    static constexpr std::uint64_t with_accessed(std::uint64_t e, bool on) {
        return detail::with_bit(e, kAccessed, on);
    }
    static constexpr std::uint64_t with_dirty(std::uint64_t e, bool on) {
        return detail::with_bit(e, kDirty, on);
    }
    static constexpr std::uint64_t with_writable(std::uint64_t e, bool on) {
        return detail::with_bit(e, kWritable, on);
    }
    static constexpr std::uint64_t with_pfn(std::uint64_t e, Pfn pfn) {
        return (e & ~pfn_mask) | detail::checked_address(name, pfn, false);
    }
};

static_assert(EntryFormat<EptFormat>);
static_assert(EntryFormat<X86PteFormat>);

} // namespace hv::mmu
