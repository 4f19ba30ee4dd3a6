#pragma once
// Entry formats. A format class only says which bits of a paging-structure
// entry mean what (its EntryBits, plus the requests it refuses);
// EntryCodec<Format>, its base, writes every operation once over those bits.
// The generic code (RadixTable, the host model, the shadow MMU) speaks only
// the codec's vocabulary below - present, pfn, permissions, accessed/dirty,
// leaf/table construction - and never touches a bit, so a second format
// costs one small class, not a second walker.
//
//   EptFormat     Intel EPT entries (SDM Vol. 3C, "EPT Paging-Structure
//                 Entries"): the secondary MMU of a VMX host.
//   X86PteFormat  x86-64 4-level paging entries (SDM Vol. 3A, "Formats of
//                 Paging-Structure Entries"): the host model's tables, and
//                 the secondary tables a KVM guest walks with CR3 = root.
//
// Contracts, for every format:
// - Every operation is a static constexpr function over std::uint64_t.
// - The permission decoders (readable, writable, executable, user) answer
//   "what does this entry grant", so they are false for a non-present entry.
//   The other fields (pfn, accessed, dirty, large) decode whether or not the
//   entry is present.
// - make_leaf throws std::invalid_argument for a request the format cannot
//   express (never silently granting more or less than asked): a pfn of 2^40
//   or more, a large leaf whose pfn is not 2 MiB aligned, or rights the
//   format refuses (its check_leaf). make_table and with_pfn check the pfn
//   the same way.
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

// How a format carries one right. No bit (mask 0): every present entry
// grants the right and a leaf does not encode it (whether refusing it is an
// error is the format's check_leaf).
struct RightBit {
    std::uint64_t mask = 0;
    bool denies = false; // a set bit takes the right away (x86 XD)
};

// The bit layout of one format: everything EntryCodec needs to know.
struct EntryBits {
    std::uint64_t present = 0; // present when any of these bits is set
    RightBit read, write, exec, user;
    std::uint64_t accessed = 0;
    std::uint64_t dirty = 0;
    std::uint64_t large = 0; // in a level-2/3 entry: maps a 2 MiB / 1 GiB page
    std::uint64_t leaf = 0;  // set in every leaf make_leaf builds, besides the rights
    std::uint64_t table = 0; // a non-leaf entry is its table's address with exactly these
};

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
    return pfn << kPageShift;
}

constexpr std::uint64_t with_bit(std::uint64_t e, std::uint64_t bit, bool on) { return on ? (e | bit) : (e & ~bit); }

} // namespace detail

// The operations every format shares, written once over Format::bits
// (CRTP: `struct MyFormat : EntryCodec<MyFormat>`). Format supplies `name`,
// `bits` and check_leaf(pfn, perms), which throws (detail::bad_entry) for
// rights the format cannot express.
template <class Format>
struct EntryCodec {
    static constexpr std::uint64_t pfn_mask = detail::kAddressField;

    static constexpr bool present(std::uint64_t e) { return (e & Format::bits.present) != 0; }
    static constexpr bool readable(std::uint64_t e) { return grants(e, Format::bits.read); }
    static constexpr bool writable(std::uint64_t e) { return grants(e, Format::bits.write); }
    static constexpr bool executable(std::uint64_t e) { return grants(e, Format::bits.exec); }
    static constexpr bool user(std::uint64_t e) { return grants(e, Format::bits.user); }
    static constexpr Perms perms(std::uint64_t e) { return {readable(e), writable(e), executable(e), user(e)}; }
    static constexpr Pfn pfn(std::uint64_t e) { return (e & pfn_mask) >> kPageShift; }
    static constexpr bool is_large(std::uint64_t e) { return (e & Format::bits.large) != 0; }
    static constexpr bool accessed(std::uint64_t e) { return (e & Format::bits.accessed) != 0; }
    static constexpr bool dirty(std::uint64_t e) { return (e & Format::bits.dirty) != 0; }

    // A leaf mapping pfn (a 4 KiB page, or with `large` a 2 MiB / 1 GiB one,
    // which needs a 2 MiB aligned pfn) with exactly the rights p.
    static constexpr std::uint64_t make_leaf(Pfn pfn, Perms p, bool large = false) {
        constexpr const EntryBits& b = Format::bits;
        Format::check_leaf(pfn, p);
        return detail::checked_address(Format::name, pfn, large) | b.leaf | encode(b.read, p.read) |
               encode(b.write, p.write) | encode(b.exec, p.exec) | encode(b.user, p.user) | (large ? b.large : 0);
    }
    // A non-leaf entry pointing to the table in frame pfn.
    static constexpr std::uint64_t make_table(Pfn pfn) {
        return detail::checked_address(Format::name, pfn, false) | Format::bits.table;
    }
    static constexpr std::uint64_t with_accessed(std::uint64_t e, bool on) {
        return detail::with_bit(e, Format::bits.accessed, on);
    }
    static constexpr std::uint64_t with_dirty(std::uint64_t e, bool on) {
        return detail::with_bit(e, Format::bits.dirty, on);
    }
    static constexpr std::uint64_t with_writable(std::uint64_t e, bool on) {
        return detail::with_bit(e, Format::bits.write.mask, on != Format::bits.write.denies);
    }
    static constexpr std::uint64_t with_pfn(std::uint64_t e, Pfn pfn) {
        return (e & ~pfn_mask) | detail::checked_address(Format::name, pfn, false);
    }

private:
    static constexpr bool grants(std::uint64_t e, RightBit r) {
        const bool set = (e & r.mask) != 0;
        // A granting bit that is one of the present bits implies presence.
        if (r.mask != 0 && !r.denies && (r.mask & Format::bits.present) == r.mask) return set;
        return present(e) && (r.mask == 0 || set != r.denies);
    }
    static constexpr std::uint64_t encode(RightBit r, bool granted) { return granted != r.denies ? r.mask : 0; }
};

// What the generic code requires of a format: a codec over its own bits.
template <class F>
concept EntryFormat = std::derived_from<F, EntryCodec<F>> && requires(Pfn pfn, Perms perms) {
    { F::name } -> std::convertible_to<const char*>;
    { F::bits } -> std::convertible_to<EntryBits>;
    { F::check_leaf(pfn, perms) } -> std::same_as<void>;
};

// Intel EPT. There is no present bit: an entry is present when any of
// R/W/X is set. EPT has no privilege levels (the guest's own paging checks
// user/supervisor), so `user` is ignored when encoding and decodes as true
// for every present entry: EPT never denies an access for being user mode.
//
// Leaves map write-back (memory type 6) with the guest PAT ignored, so guest
// memory is cached as host memory is, whatever the guest's PAT says. A
// non-leaf entry has R/W/X all set, so the next level alone decides; its
// bits 7:3 are zero (reserved in PML4Es; memory type and large bit mean
// nothing in a table pointer). Accessed is preset in a non-leaf entry: see
// X86PteFormat.
struct EptFormat : EntryCodec<EptFormat> {
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
    static constexpr unsigned kMemTypeWriteBack = 6;

    static constexpr EntryBits bits{
        .present = kRead | kWrite | kExec,
        .read = {kRead},
        .write = {kWrite},
        .exec = {kExec},
        .user = {}, // no bit: granted by presence, ignored when encoding
        .accessed = kAccessed,
        .dirty = kDirty,
        .large = kLarge,
        .leaf = (std::uint64_t{kMemTypeWriteBack} << kMemTypeShift) | kIgnorePat,
        .table = kRead | kWrite | kExec | kAccessed,
    };

    // Write without read is an EPT misconfiguration (an exit, not a
    // violation), so it is refused.
    static constexpr void check_leaf(Pfn pfn, Perms p) {
        if (p.write && !p.read)
            detail::bad_entry(name, "readable if writable (W without R is a misconfiguration)", "perms without R, pfn",
                              pfn);
    }

    static constexpr unsigned memory_type(std::uint64_t e) { return unsigned((e & kMemTypeMask) >> kMemTypeShift); }
    static constexpr bool ignore_pat(std::uint64_t e) { return (e & kIgnorePat) != 0; }
};

// x86-64 4-level paging. NX (bit 63) is honoured only with EFER.NXE = 1
// (the VMM sets it); without it bit 63 is reserved and a walk faults.
// Bit 7 is PS in a PDE/PDPTE but PAT in a 4 KiB PTE: is_large() is only
// meaningful above the leaf level, which is where the walkers ask it. In a
// 2 MiB leaf bit 12 is PAT, not address: make_leaf never sets it (pfn must
// be 2 MiB aligned), so pfn() is exact for the leaves this code builds.
//
// A leaf is P | RW if write | US if user | NX unless exec | PS if large.
// PWT, PCD and PAT stay 0: PAT entry 0, write-back with the architectural
// reset PAT. A non-leaf entry grants everything (P, RW, US, NX clear):
// rights are the AND over levels, so the leaf alone decides. Accessed is
// preset in a non-leaf entry: a CPU walking the table sets A in every
// non-leaf entry it uses, and a preset bit means it never writes the table
// (no A update can race a zap or unlink and write a stale entry back).
struct X86PteFormat : EntryCodec<X86PteFormat> {
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

    static constexpr EntryBits bits{
        .present = kPresent,
        .read = {}, // no bit: a present entry always grants read
        .write = {kWritable},
        .exec = {kNoExec, true},
        .user = {kUser},
        .accessed = kAccessed,
        .dirty = kDirty,
        .large = kLarge,
        .leaf = kPresent,
        .table = kPresent | kWritable | kUser | kAccessed,
    };

    // A present x86 entry always grants read, so read = false cannot be
    // expressed (store 0 for "no access").
    static constexpr void check_leaf(Pfn pfn, Perms p) {
        if (!p.read)
            detail::bad_entry(name, "a readable leaf (a present entry always grants read)", "perms without read, pfn",
                              pfn);
    }

    static constexpr bool global(std::uint64_t e) { return (e & kGlobal) != 0; }
};

static_assert(EntryFormat<EptFormat>);
static_assert(EntryFormat<X86PteFormat>);

} // namespace hv::mmu
