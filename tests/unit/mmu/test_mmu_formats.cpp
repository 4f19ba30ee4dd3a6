// hv::mmu::EptFormat and X86PteFormat: bit patterns derived by hand from the
// Intel SDM, decode of hand-written entries, encode/decode round trips, and
// refusal of requests a format cannot express.
//
// EPT (SDM Vol. 3C, "EPT Paging-Structure Entries", tables for an EPT PTE
// that maps a 4-KByte page / a PDE that maps a 2-MByte page):
//   bit 0 read, 1 write, 2 execute, 5:3 EPT memory type (leaf), 6 ignore PAT
//   (leaf), 7 maps a page (PDE/PDPTE), 8 accessed, 9 dirty (leaf),
//   51:12 physical address (51:21 for a 2 MiB page, 20:12 reserved).
//   An entry is present if any of bits 2:0 is set. Memory type 6 = WB.
// x86-64 (SDM Vol. 3A, "Formats of Paging-Structure Entries"):
//   bit 0 P, 1 R/W, 2 U/S, 3 PWT, 4 PCD, 5 A, 6 D (leaf), 7 PS (PDE/PDPTE;
//   PAT in a PTE), 8 G (leaf), 51:12 address, 63 XD (with EFER.NXE).
#include <doctest/doctest.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "mmu/table/entry_format.hpp"
#include "tests/support/text_match.hpp"

using hv::mmu::EptFormat;
using hv::mmu::Perms;
using hv::mmu::Pfn;
using hv::mmu::X86PteFormat;

TYPE_TO_STRING_AS("EptFormat", hv::mmu::EptFormat);
TYPE_TO_STRING_AS("X86PteFormat", hv::mmu::X86PteFormat);

using hv::test::contains;
using hv::test::message_of;

namespace {

constexpr Perms kR{.read = true};
constexpr Perms kRW{.read = true, .write = true};
constexpr Perms kRX{.read = true, .exec = true};
constexpr Perms kRWX{.read = true, .write = true, .exec = true};
constexpr Perms kX{.exec = true};
constexpr Perms kRWXU{.read = true, .write = true, .exec = true, .user = true};
constexpr Perms kRWU{.read = true, .write = true, .user = true};

// All 16 combinations of the four rights.
std::vector<Perms> all_perms() {
    std::vector<Perms> v;
    for (unsigned m = 0; m < 16; ++m) v.push_back(Perms{(m & 1) != 0, (m & 2) != 0, (m & 4) != 0, (m & 8) != 0});
    return v;
}

template <class F>
bool representable(const Perms& p) {
    if constexpr (std::is_same_v<F, EptFormat>)
        return !(p.write && !p.read); // W without R is an EPT misconfiguration
    else
        return p.read; // a present x86 entry always grants read
}

// What decoding the leaf built from p must report.
template <class F>
Perms decoded(const Perms& p) {
    if constexpr (std::is_same_v<F, EptFormat>)
        return Perms{p.read, p.write, p.exec, p.read || p.write || p.exec}; // user: EPT denies no privilege level
    else
        return p;
}

} // namespace

// ---------------------------------------------------------------------------
// EPT

// The encoders are constant expressions.
static_assert(EptFormat::make_leaf(0x12345, kRWX) == 0x12345077);
static_assert(X86PteFormat::make_leaf(0x12345, kRWXU) == 0x12345007);

TEST_CASE("EptFormat: leaf bit patterns from the SDM") {
    // pfn 0x12345 -> address bits 51:12 = 0x12345 << 12 = 0x12345000.
    // R|W|X = bits 2:0 = 0x7; WB = 6 in bits 5:3 = 6 << 3 = 0x30;
    // ignore PAT = bit 6 = 0x40. Low byte 0x7 | 0x30 | 0x40 = 0x77.
    CHECK(EptFormat::make_leaf(0x12345, kRWX) == 0x0000000012345077ull);
    // Read only: 0x1 | 0x30 | 0x40 = 0x71.
    CHECK(EptFormat::make_leaf(0x12345, kR) == 0x0000000012345071ull);
    // Read+write: 0x3 | 0x70 = 0x73. Read+execute: 0x5 | 0x70 = 0x75.
    CHECK(EptFormat::make_leaf(0x12345, kRW) == 0x0000000012345073ull);
    CHECK(EptFormat::make_leaf(0x12345, kRX) == 0x0000000012345075ull);
    // Execute only (allowed when the CPU reports execute-only support):
    // 0x4 | 0x70 = 0x74.
    CHECK(EptFormat::make_leaf(0x12345, kX) == 0x0000000012345074ull);
    // `user` has no EPT bit: the same pattern as without it.
    CHECK(EptFormat::make_leaf(0x12345, kRWXU) == 0x0000000012345077ull);
    // A 2 MiB leaf at 4 MiB: pfn 0x400 -> 0x400000 (bits 20:12 zero), bit 7
    // = 0x80; with RW: 0x80 | 0x70 | 0x3 = 0xF3.
    CHECK(EptFormat::make_leaf(0x400, kRW, true) == 0x00000000004000F3ull);
    // The highest frame: pfn 2^40 - 1 fills bits 51:12 -> 0x000FFFFFFFFFF000.
    CHECK(EptFormat::make_leaf((Pfn{1} << 40) - 1, kRWX) == 0x000FFFFFFFFFF077ull);
    CHECK(EptFormat::make_leaf(0, kR) == 0x71);
}

TEST_CASE("EptFormat: table entries, accessed/dirty/write toggles") {
    // A non-leaf entry: address | R|W|X (0x7) | accessed (bit 8, preset so
    // a walker never writes the table); bits 7:3 stay 0 (reserved in a
    // PML4E, no memory type for a table pointer).
    CHECK(EptFormat::make_table(0xABCDE) == 0x00000000ABCDE107ull);
    CHECK(EptFormat::make_table(0) == 0x107);
    CHECK_FALSE(EptFormat::is_large(EptFormat::make_table(0xABCDE)));
    // Accessed = bit 8 = 0x100, dirty = bit 9 = 0x200: 0x77 | 0x300 = 0x377.
    const std::uint64_t e = EptFormat::make_leaf(0x12345, kRWX);
    CHECK(EptFormat::with_accessed(e, true) == 0x12345177ull);
    CHECK(EptFormat::with_dirty(e, true) == 0x12345277ull);
    CHECK(EptFormat::with_dirty(EptFormat::with_accessed(e, true), true) == 0x12345377ull);
    CHECK(EptFormat::with_accessed(0x12345377ull, false) == 0x12345277ull);
    CHECK(EptFormat::with_dirty(0x12345377ull, false) == 0x12345177ull);
    // Clearing W (bit 1): 0x77 -> 0x75.
    CHECK(EptFormat::with_writable(e, false) == 0x12345075ull);
    CHECK(EptFormat::with_writable(0x12345075ull, true) == 0x12345077ull);
    // Repointing keeps every other bit: A|D|RWX|WB|IPAT with a new address.
    CHECK(EptFormat::with_pfn(0x12345377ull, 0x9) == 0x9377ull);
}

TEST_CASE("EptFormat: decoding a hand-written entry") {
    // 0x00000BEEF0000305: low 12 bits 0x305 = 0b0011'0000'0101:
    //   bit 0 R = 1, bit 1 W = 0, bit 2 X = 1, bits 5:3 = 0 (UC), bit 6 = 0,
    //   bit 7 = 0, bit 8 A = 1, bit 9 D = 1.
    //   bits 51:12 = 0x00000BEEF0000 -> pfn 0xBEEF0000.
    const std::uint64_t e = 0x00000BEEF0000305ull;
    CHECK(EptFormat::present(e));
    CHECK(EptFormat::readable(e));
    CHECK_FALSE(EptFormat::writable(e));
    CHECK(EptFormat::executable(e));
    CHECK(EptFormat::user(e));
    CHECK(EptFormat::memory_type(e) == 0);
    CHECK_FALSE(EptFormat::ignore_pat(e));
    CHECK_FALSE(EptFormat::is_large(e));
    CHECK(EptFormat::accessed(e));
    CHECK(EptFormat::dirty(e));
    CHECK(EptFormat::pfn(e) == 0xBEEF0000ull);
    CHECK(EptFormat::perms(e) == Perms{.read = true, .exec = true, .user = true});
    // Our leaves: memory type 6 (WB) with ignore PAT.
    CHECK(EptFormat::memory_type(EptFormat::make_leaf(1, kR)) == 6);
    CHECK(EptFormat::ignore_pat(EptFormat::make_leaf(1, kR)));
    // No present bit: present iff any of R/W/X. Bits above do not count.
    CHECK_FALSE(EptFormat::present(0));
    CHECK_FALSE(EptFormat::present(0x000FFFFFFFFFFFF8ull)); // everything but bits 2:0
    CHECK(EptFormat::present(0x4));                          // execute only
    CHECK_FALSE(EptFormat::user(0x12345070ull));             // not present: grants nothing
    // Bits 63 (suppress #VE) and 11:10 are outside the address field.
    CHECK(EptFormat::pfn(0x8000000000012C07ull) == 0x12);
}

TEST_CASE("EptFormat: refuses what EPT cannot express") {
    // Write without read is a misconfiguration, not a permission.
    CHECK(contains(message_of<std::invalid_argument>([] { (void)EptFormat::make_leaf(5, Perms{.write = true}); }),
                   "EPT entry: expected readable if writable"));
    CHECK_THROWS_AS((void)EptFormat::make_leaf(5, Perms{.write = true, .exec = true}), std::invalid_argument);
    // Bits 51:12 hold at most 40 bits of pfn.
    CHECK(contains(message_of<std::invalid_argument>([] { (void)EptFormat::make_leaf(Pfn{1} << 40, kR); }),
                   "expected a pfn below 2^40 (bits 51:12), found pfn 0x10000000000"));
    CHECK_THROWS_AS((void)EptFormat::make_table(Pfn{1} << 40), std::invalid_argument);
    CHECK_THROWS_AS((void)EptFormat::with_pfn(0x7, Pfn{1} << 41), std::invalid_argument);
    // A 2 MiB leaf's bits 20:12 are reserved: the pfn must be a multiple of 512.
    CHECK(contains(message_of<std::invalid_argument>([] { (void)EptFormat::make_leaf(0x401, kR, true); }),
                   "2 MiB aligned pfn"));
    CHECK_NOTHROW((void)EptFormat::make_leaf(0x401, kR, false));
}

// ---------------------------------------------------------------------------
// x86-64

TEST_CASE("X86PteFormat: leaf bit patterns from the SDM") {
    // pfn 0x12345 -> 0x12345000; P (bit 0) | R/W (bit 1) | U/S (bit 2) = 0x7;
    // executable, so XD (bit 63) clear.
    CHECK(X86PteFormat::make_leaf(0x12345, kRWXU) == 0x0000000012345007ull);
    // Read-only, supervisor, not executable: P = 0x1, XD = 1 << 63.
    CHECK(X86PteFormat::make_leaf(0x12345, kR) == 0x8000000012345001ull);
    // Read/write supervisor executable: P|RW = 0x3.
    CHECK(X86PteFormat::make_leaf(0x12345, kRWX) == 0x0000000012345003ull);
    // Read/write user data: P|RW|US = 0x7 with XD.
    CHECK(X86PteFormat::make_leaf(0x12345, kRWU) == 0x8000000012345007ull);
    // A 2 MiB leaf at 4 MiB, everything allowed: 0x400000 | PS (bit 7,
    // 0x80) | 0x7 = 0x400087; bit 12 (PAT in a 2 MiB leaf) stays 0.
    CHECK(X86PteFormat::make_leaf(0x400, kRWXU, true) == 0x0000000000400087ull);
    CHECK(X86PteFormat::make_leaf((Pfn{1} << 40) - 1, kRX) == 0x000FFFFFFFFFF001ull);
}

TEST_CASE("X86PteFormat: table entries, accessed/dirty/write toggles") {
    // A non-leaf entry grants all (rights AND across levels): P|RW|US = 0x7,
    // XD clear, accessed (0x20) preset so the CPU's walk never writes it.
    CHECK(X86PteFormat::make_table(0xABCDE) == 0x00000000ABCDE027ull);
    CHECK_FALSE(X86PteFormat::is_large(X86PteFormat::make_table(0xABCDE)));
    // A = bit 5 = 0x20, D = bit 6 = 0x40: 0x7 | 0x60 = 0x67.
    const std::uint64_t e = X86PteFormat::make_leaf(0x12345, kRWXU);
    CHECK(X86PteFormat::with_accessed(e, true) == 0x12345027ull);
    CHECK(X86PteFormat::with_dirty(e, true) == 0x12345047ull);
    CHECK(X86PteFormat::with_dirty(X86PteFormat::with_accessed(e, true), true) == 0x12345067ull);
    CHECK(X86PteFormat::with_accessed(0x12345067ull, false) == 0x12345047ull);
    // Clearing R/W (bit 1): 0x7 -> 0x5; the XD bit is untouched.
    CHECK(X86PteFormat::with_writable(0x8000000012345007ull, false) == 0x8000000012345005ull);
    CHECK(X86PteFormat::with_writable(0x8000000012345005ull, true) == 0x8000000012345007ull);
    CHECK(X86PteFormat::with_pfn(0x8000000012345067ull, 0x9) == 0x8000000000009067ull);
}

TEST_CASE("X86PteFormat: decoding hand-written entries") {
    // 0x80000000BEEF0167: low bits 0x167 = 0b0001'0110'0111:
    //   P=1, RW=1, US=1, PWT=0, PCD=0, A=1, D=1, PS/PAT=0, G=1; XD (bit 63) = 1.
    //   bits 51:12 = 0xBEEF0 -> pfn 0xBEEF0.
    const std::uint64_t e = 0x80000000BEEF0167ull;
    CHECK(X86PteFormat::present(e));
    CHECK(X86PteFormat::readable(e));
    CHECK(X86PteFormat::writable(e));
    CHECK(X86PteFormat::user(e));
    CHECK_FALSE(X86PteFormat::executable(e));
    CHECK(X86PteFormat::accessed(e));
    CHECK(X86PteFormat::dirty(e));
    CHECK(X86PteFormat::global(e));
    CHECK_FALSE(X86PteFormat::is_large(e));
    CHECK(X86PteFormat::pfn(e) == 0xBEEF0);
    CHECK(X86PteFormat::perms(e) == Perms{.read = true, .write = true, .exec = false, .user = true});
    // The same with P clear (0x166): not present, so it grants nothing, but
    // the other fields still decode (a swap entry keeps data there).
    const std::uint64_t np = 0x80000000BEEF0166ull;
    CHECK_FALSE(X86PteFormat::present(np));
    CHECK_FALSE(X86PteFormat::writable(np));
    CHECK_FALSE(X86PteFormat::user(np));
    CHECK_FALSE(X86PteFormat::executable(np));
    CHECK(X86PteFormat::perms(np) == Perms{});
    CHECK(X86PteFormat::pfn(np) == 0xBEEF0);
    // A PDE with PS (bit 7): 0x00000000002000E3 = 2 MiB page at 2 MiB, P|RW|A|D|PS.
    CHECK(X86PteFormat::is_large(0x00000000002000E3ull));
    CHECK(X86PteFormat::pfn(0x00000000002000E3ull) == 0x200);
}

TEST_CASE("X86PteFormat: refuses what x86 paging cannot express") {
    CHECK(contains(message_of<std::invalid_argument>([] { (void)X86PteFormat::make_leaf(5, Perms{.write = true}); }),
                   "x86-64 entry: expected a readable leaf"));
    CHECK_THROWS_AS((void)X86PteFormat::make_leaf(5, kX), std::invalid_argument);
    CHECK_THROWS_AS((void)X86PteFormat::make_leaf(Pfn{1} << 40, kR), std::invalid_argument);
    CHECK_THROWS_AS((void)X86PteFormat::make_table(UINT64_MAX), std::invalid_argument);
    // Bit 12 of a 2 MiB leaf is PAT: an unaligned pfn would set it.
    CHECK(contains(message_of<std::invalid_argument>([] { (void)X86PteFormat::make_leaf(0x201, kR, true); }),
                   "2 MiB aligned pfn (multiple of 512) for a large leaf, found pfn 0x201"));
}

TEST_CASE("Perms: to_string") {
    CHECK(to_string(Perms{}) == "----");
    CHECK(to_string(kRWXU) == "rwxu");
    CHECK(to_string(kRX) == "r-x-");
}

// ---------------------------------------------------------------------------
// Both formats

TEST_CASE_TEMPLATE("EntryFormat: leaf round trip over pfns and all permission sets", F, EptFormat, X86PteFormat) {
    const Pfn pfns[] = {0, 1, 0x12345, 0x200, 0xFFFFF, (Pfn{1} << 40) - 1, (Pfn{1} << 40) - 512};
    for (Pfn pfn : pfns) {
        for (const Perms& p : all_perms()) {
            for (bool large : {false, true}) {
                CAPTURE(pfn);
                CAPTURE(to_string(p));
                CAPTURE(large);
                if (large && pfn % 512) {
                    CHECK_THROWS_AS((void)F::make_leaf(pfn, p, large), std::invalid_argument);
                    continue;
                }
                if (!representable<F>(p)) {
                    CHECK_THROWS_AS((void)F::make_leaf(pfn, p, large), std::invalid_argument);
                    continue;
                }
                const std::uint64_t e = F::make_leaf(pfn, p, large);
                const bool any = p.read || p.write || p.exec;
                CHECK(F::present(e) == any);
                if (!any) continue; // EPT: no rights at all is a non-present entry
                CHECK(F::pfn(e) == pfn);
                CHECK(F::perms(e) == decoded<F>(p));
                CHECK(F::readable(e) == decoded<F>(p).read);
                CHECK(F::writable(e) == p.write);
                CHECK(F::executable(e) == p.exec);
                CHECK(F::is_large(e) == large);
                CHECK_FALSE(F::accessed(e));
                CHECK_FALSE(F::dirty(e));
                // Each toggle changes its own field only.
                const std::uint64_t a = F::with_accessed(e, true);
                CHECK(F::accessed(a));
                CHECK_FALSE(F::dirty(a));
                CHECK(F::pfn(a) == pfn);
                CHECK(F::perms(a) == F::perms(e));
                CHECK(F::with_accessed(a, false) == e);
                const std::uint64_t d = F::with_dirty(e, true);
                CHECK(F::dirty(d));
                CHECK_FALSE(F::accessed(d));
                CHECK(F::with_dirty(d, false) == e);
                if (p.read) {
                    const std::uint64_t flipped = F::with_writable(e, !p.write);
                    CHECK(F::writable(flipped) == !p.write);
                    CHECK(F::readable(flipped));
                    CHECK(F::executable(flipped) == p.exec);
                    CHECK(F::pfn(flipped) == pfn);
                    CHECK(F::with_writable(flipped, p.write) == e);
                }
                CHECK(F::pfn(F::with_pfn(e, 0x777)) == 0x777);
                CHECK(F::perms(F::with_pfn(e, 0x777)) == F::perms(e));
            }
        }
    }
}

TEST_CASE_TEMPLATE("EntryFormat: table entries are present, grant everything, decode their pfn", F, EptFormat,
                   X86PteFormat) {
    for (Pfn pfn : {Pfn{0}, Pfn{1}, Pfn{0x12345}, (Pfn{1} << 40) - 1}) {
        CAPTURE(pfn);
        const std::uint64_t t = F::make_table(pfn);
        CHECK(F::present(t));
        CHECK(F::readable(t));
        CHECK(F::writable(t));
        CHECK(F::executable(t));
        CHECK(F::user(t));
        CHECK_FALSE(F::is_large(t));
        CHECK(F::accessed(t)); // preset: a CPU walking the table never writes it
        CHECK_FALSE(F::dirty(t));
        CHECK(F::pfn(t) == pfn);
        CHECK((t & F::pfn_mask) == pfn << 12);
    }
    CHECK_FALSE(F::present(0));
    CHECK(F::pfn_mask == 0x000FFFFFFFFFF000ull);
    CHECK(std::string(F::name).size() > 0);
}
