// hv::GuestMemory's bounds-checked accessors (every guest-supplied address
// goes through them) and hv::translate_gva / read_guest_virtual, which walk
// the guest's own page tables through those accessors.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <variant>
#include <vector>

#include "tests/support/proc_maps.hpp"
#include "tests/support/text_match.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/run/guest_page_walk.hpp"

using hv::GuestMemory;
using hv::test::contains;

namespace {

constexpr std::uint64_t kSize = 0x10000; // 64 KiB

// The permissions ("rw-p", "---p") of the one mapping holding address a.
std::vector<std::string> perms_at(const std::uint8_t* a) { return hv::test::vmas_over({a, 1}).perms; }

} // namespace

// ---------------------------------------------------------------------------
// GuestMemory

// An access that runs off either end of guest RAM (a missed bounds check)
// must fault, not reach the neighbouring mapping: the fuzz targets rely on it.
TEST_CASE("GuestMemory: RAM lies between inaccessible guard pages") {
    GuestMemory m(kSize);
    const std::uint8_t* base = m.host_base();
    using Perms = std::vector<std::string>;
    CHECK(perms_at(base) == Perms{"rw-p"});
    CHECK(perms_at(base + kSize - 1) == Perms{"rw-p"});
    CHECK(perms_at(base - 1) == Perms{"---p"});
    CHECK(perms_at(base + kSize) == Perms{"---p"});
}

TEST_CASE("GuestMemory: size and zero-filled contents") {
    GuestMemory mem(kSize);
    CHECK(mem.size() == kSize);
    CHECK(mem.read_obj<std::uint64_t>(0) == std::uint64_t{0});
    CHECK(mem.read_obj<std::uint64_t>(kSize / 2) == std::uint64_t{0});
    CHECK(mem.read_obj<std::uint64_t>(kSize - 8) == std::uint64_t{0});
}

TEST_CASE("GuestMemory::contains: boundaries") {
    GuestMemory mem(kSize);
    CHECK(mem.contains(0, 0));
    CHECK(mem.contains(0, kSize));
    CHECK_FALSE(mem.contains(0, kSize + 1));
    CHECK(mem.contains(kSize - 1, 1));
    CHECK_FALSE(mem.contains(kSize - 1, 2));
    CHECK(mem.contains(kSize, 0)); // the empty range at the end
    CHECK_FALSE(mem.contains(kSize, 1));
    CHECK_FALSE(mem.contains(kSize + 1, 0));
}

TEST_CASE("GuestMemory::contains: no wrap-around near UINT64_MAX") {
    GuestMemory mem(kSize);
    // gpa + len would wrap to a small number for each of these.
    CHECK_FALSE(mem.contains(UINT64_MAX, 1));
    CHECK_FALSE(mem.contains(UINT64_MAX, 2));
    CHECK_FALSE(mem.contains(UINT64_MAX - 7, 8));
    CHECK_FALSE(mem.contains(UINT64_MAX - 7, 0x10));
    CHECK_FALSE(mem.contains(1, UINT64_MAX));
    CHECK_FALSE(mem.contains(kSize - 1, UINT64_MAX));
    CHECK_FALSE(mem.contains(UINT64_MAX, 0));
    CHECK_FALSE(mem.contains(0, UINT64_MAX));
}

TEST_CASE("GuestMemory::span: host view of exactly the requested range") {
    GuestMemory mem(kSize);
    auto s = mem.span(0x100, 0x20);
    REQUIRE(s.has_value());
    CHECK(s->data() == mem.host_base() + 0x100);
    CHECK(s->size() == 0x20);
    (*s)[0] = 0x5a;
    CHECK(mem.read_obj<std::uint8_t>(0x100) == std::uint8_t{0x5a});

    const GuestMemory& cmem = mem;
    auto cs = cmem.span(kSize - 4, 4);
    REQUIRE(cs.has_value());
    CHECK(cs->data() == mem.host_base() + kSize - 4);

    CHECK_FALSE(mem.span(kSize - 4, 5).has_value());
    CHECK_FALSE(mem.span(UINT64_MAX - 1, 4).has_value());
    CHECK_FALSE(cmem.span(kSize, 1).has_value());
    auto empty = mem.span(kSize, 0);
    REQUIRE(empty.has_value());
    CHECK(empty->empty());
}

TEST_CASE("GuestMemory::read/write: round trip and refusal without partial effects") {
    GuestMemory mem(kSize);
    const std::vector<std::uint8_t> in = {1, 2, 3, 4, 5, 6, 7, 8, 9};
    CHECK(mem.write(0x1234, in));
    std::vector<std::uint8_t> out(in.size());
    CHECK(mem.read(0x1234, out));
    CHECK(out == in);

    // A write straddling the end is refused and changes nothing.
    const std::vector<std::uint8_t> tail = {0xaa, 0xbb, 0xcc, 0xdd};
    CHECK_FALSE(mem.write(kSize - 2, tail));
    std::vector<std::uint8_t> last(2);
    CHECK(mem.read(kSize - 2, last));
    CHECK(last == std::vector<std::uint8_t>{0, 0});

    // A read straddling the end is refused and leaves the buffer alone.
    std::vector<std::uint8_t> buf(4, 0x77);
    CHECK_FALSE(mem.read(kSize - 2, buf));
    CHECK(buf == std::vector<std::uint8_t>(4, 0x77));

    CHECK_FALSE(mem.write(UINT64_MAX - 1, tail));
    CHECK_FALSE(mem.read(UINT64_MAX - 1, buf));
    CHECK_FALSE(mem.read(UINT64_MAX, buf));
}

TEST_CASE("GuestMemory::read/write: empty accesses") {
    GuestMemory mem(kSize);
    std::vector<std::uint8_t> none;
    CHECK(mem.read(0, none));
    CHECK(mem.read(kSize, none));
    CHECK(mem.write(kSize, none));
    CHECK_FALSE(mem.read(kSize + 1, none));
    CHECK_FALSE(mem.write(UINT64_MAX, none));
}

TEST_CASE("GuestMemory::read_obj/write_obj") {
    GuestMemory mem(kSize);
    struct Pair {
        std::uint32_t a;
        std::uint16_t b;
        std::uint8_t c[2];
    };
    CHECK(mem.write_obj(0x40, Pair{0xdeadbeef, 0x1234, {5, 6}}));
    const auto p = mem.read_obj<Pair>(0x40);
    REQUIRE(p.has_value());
    CHECK(p->a == 0xdeadbeef);
    CHECK(p->b == 0x1234);
    CHECK(p->c[1] == 6);
    // Little-endian in guest memory: the first byte is the low byte of `a`.
    CHECK(mem.read_obj<std::uint8_t>(0x40) == std::uint8_t{0xef});

    CHECK(mem.write_obj<std::uint64_t>(kSize - 8, 0x0102030405060708));
    CHECK(mem.read_obj<std::uint64_t>(kSize - 8) == std::uint64_t{0x0102030405060708});
    CHECK_FALSE(mem.write_obj<std::uint64_t>(kSize - 7, 1));
    CHECK_FALSE(mem.read_obj<std::uint64_t>(kSize - 7).has_value());
    CHECK_FALSE(mem.read_obj<std::uint32_t>(UINT64_MAX - 3).has_value());
    CHECK_FALSE(mem.read_obj<std::uint32_t>(UINT64_MAX - 1).has_value());
    CHECK_FALSE(mem.write_obj<std::uint32_t>(UINT64_MAX - 1, 0));
    CHECK(mem.read_obj<std::uint64_t>(kSize - 8) == std::uint64_t{0x0102030405060708}); // untouched
}

TEST_CASE("GuestMemory: a size the host cannot map throws VmmError") {
    // 2^60 bytes is beyond any x86-64 user address space (47 or 56 bits).
    try {
        GuestMemory mem(std::uint64_t{1} << 60);
        FAIL("mapping 2^60 bytes succeeded");
    } catch (const hv::VmmError& e) {
        CHECK(contains(e.what(), "cannot map"));
        CHECK(contains(e.what(), "guest RAM"));
    }
}

// ---------------------------------------------------------------------------
// translate_gva. 4-level paging, SDM Vol. 3A 4.5: a 48-bit linear address
// splits into PML4 index [47:39], PDPT index [38:30], PD index [29:21],
// PT index [20:12] and page offset [11:0]. Entries: bit 0 P, bit 1 R/W,
// bit 7 PS (1 GiB page in a PDPTE, 2 MiB page in a PDE), bits 51:12 the
// physical address, bit 63 XD.

namespace {

constexpr std::uint64_t kP = 1, kRW = 2, kPS = 0x80, kXD = 1ull << 63;
constexpr std::uint64_t kPml4 = 0x10000, kPdpt = 0x11000, kPd = 0x12000, kPt = 0x13000;

constexpr std::uint64_t va(std::uint64_t pml4, std::uint64_t pdpt, std::uint64_t pd, std::uint64_t pt,
                           std::uint64_t offset) {
    return (pml4 << 39) | (pdpt << 30) | (pd << 21) | (pt << 12) | offset;
}

// A 4 MiB guest with these hand-built tables:
//   PML4[1]   -> PDPT            PML4[256] -> the same PDPT (upper half)
//   PDPT[2]   -> PD              PDPT[7]   =  1 GiB page at 0x40000000
//   PD[3]     -> PT              PD[5]     =  2 MiB page at 0x600000
//   PD[8]     -> a PT at 0x7fff0000, outside RAM
//   PT[4]     =  4 KiB page at 0x234000 (XD set)
//   PT[10]    -> 0x300000, PT[11] -> 0x280000 (virtually adjacent, physically not)
//   PT[12]    -> 0x301000, PT[13] not present
struct Tables {
    GuestMemory mem{4 << 20};
    kvm_sregs sregs{};
    Tables() {
        auto set = [&](std::uint64_t table, unsigned index, std::uint64_t entry) {
            REQUIRE(mem.write_obj(table + index * 8, entry));
        };
        set(kPml4, 1, kPdpt | kP | kRW);
        set(kPml4, 256, kPdpt | kP | kRW);
        set(kPdpt, 2, kPd | kP | kRW);
        set(kPdpt, 7, 0x40000000 | kP | kRW | kPS);
        set(kPd, 3, kPt | kP | kRW);
        set(kPd, 5, 0x600000 | kP | kRW | kPS);
        set(kPd, 8, 0x7fff0000 | kP | kRW);
        set(kPt, 4, 0x234000 | kP | kRW | kXD);
        set(kPt, 10, 0x300000 | kP);
        set(kPt, 11, 0x280000 | kP);
        set(kPt, 12, 0x301000 | kP);
        // Long mode, as setup_sregs leaves it: CR0.PG|PE, CR4.PAE, EFER.LME|LMA.
        sregs.cr0 = 0x80000011;
        sregs.cr4 = 0x20;
        sregs.efer = 0x500;
        sregs.cr3 = kPml4;
    }
};

std::uint64_t translated(const Tables& t, std::uint64_t gva) {
    const auto r = hv::translate_gva(t.mem, t.sregs, gva);
    if (const auto* f = std::get_if<hv::WalkFailure>(&r)) FAIL("walk failed: " << f->why);
    return std::get<std::uint64_t>(r);
}

std::string failure(const Tables& t, std::uint64_t gva) {
    const auto r = hv::translate_gva(t.mem, t.sregs, gva);
    if (std::holds_alternative<std::uint64_t>(r)) FAIL("walk succeeded: " << std::get<std::uint64_t>(r));
    return std::get<hv::WalkFailure>(r).why;
}

} // namespace

TEST_CASE("translate_gva: 4 KiB page through all four levels") {
    Tables t;
    // va(1, 2, 3, 4, 0x567) = 0x8000000000 + 0x80000000 + 0x600000 + 0x4000 + 0x567
    CHECK(va(1, 2, 3, 4, 0x567) == 0x8080604567ull);
    // PT[4] = 0x234000: physical = 0x234000 + 0x567. XD (bit 63) must not leak in.
    CHECK(translated(t, va(1, 2, 3, 4, 0x567)) == 0x234567);
    CHECK(translated(t, va(1, 2, 3, 4, 0)) == 0x234000);
    CHECK(translated(t, va(1, 2, 3, 4, 0xfff)) == 0x234fff);
}

TEST_CASE("translate_gva: 2 MiB page") {
    Tables t;
    // PD[5] = 0x600000 with PS: physical = 0x600000 + the low 21 bits of the address.
    CHECK(translated(t, va(1, 2, 5, 0, 0x12345)) == 0x612345);
    CHECK(translated(t, va(1, 2, 5, 0x1ff, 0xfff)) == 0x7fffff);
}

TEST_CASE("translate_gva: 1 GiB page") {
    Tables t;
    // PDPT[7] = 0x40000000 with PS: physical = 0x40000000 + the low 30 bits.
    CHECK(translated(t, (1ull << 39) | (7ull << 30) | 0x12345678) == 0x52345678);
}

TEST_CASE("translate_gva: upper-half (sign-extended) addresses use PML4 index 256") {
    Tables t;
    // 0xffff800000000000 has bits 47:39 = 0x100 = 256.
    CHECK(translated(t, 0xffff800000000000ull | va(0, 2, 5, 0, 0x42)) == 0x600042);
}

TEST_CASE("translate_gva: CR3's low flag bits (PWT/PCD) are not part of the table address") {
    Tables t;
    t.sregs.cr3 = kPml4 | 0x18;
    CHECK(translated(t, va(1, 2, 3, 4, 0x567)) == 0x234567);
}

TEST_CASE("translate_gva: non-present entries name the level") {
    Tables t;
    CHECK(contains(failure(t, va(2, 0, 0, 0, 0)), "not present at PML4 level"));
    CHECK(contains(failure(t, va(1, 3, 0, 0, 0)), "not present at PDPT level"));
    CHECK(contains(failure(t, va(1, 2, 6, 0, 0)), "not present at PD level"));
    CHECK(contains(failure(t, va(1, 2, 3, 5, 0)), "not present at PT level"));
    // The message names the address that failed.
    CHECK(contains(failure(t, va(1, 2, 3, 5, 0x10)), "0x8080605010"));
}

TEST_CASE("translate_gva: an entry with an address but P clear is not present") {
    Tables t;
    REQUIRE(t.mem.write_obj<std::uint64_t>(kPt + 4 * 8, 0x234000 | kRW));
    CHECK(contains(failure(t, va(1, 2, 3, 4, 0)), "not present at PT level"));
}

TEST_CASE("translate_gva: a page table outside guest RAM") {
    Tables t;
    // PD[8] points at a PT at 0x7fff0000; PT index 9 -> entry at 0x7fff0000 + 9 * 8 = 0x7fff0048.
    const std::string why = failure(t, va(1, 2, 8, 9, 0));
    CHECK(contains(why, "PT entry at 0x7fff0048"));
    CHECK(contains(why, "outside guest RAM"));

    // CR3 itself outside RAM: PML4 index 1 -> 0x80000000 + 8.
    t.sregs.cr3 = 0x80000000;
    const std::string why2 = failure(t, va(1, 2, 3, 4, 0));
    CHECK(contains(why2, "PML4 entry at 0x80000008"));
    CHECK(contains(why2, "outside guest RAM"));
}

TEST_CASE("translate_gva: paging off is the identity (32-bit linear addresses)") {
    Tables t;
    t.sregs.cr0 = 0x11; // PE, no PG
    t.sregs.efer = 0;
    t.sregs.cr4 = 0;
    CHECK(translated(t, 0xabcde) == 0xabcde);
    CHECK(translated(t, 0x100000) == 0x100000);
    CHECK(translated(t, 0) == 0);
    // Without paging a linear address is 32 bits wide.
    CHECK(translated(t, 0x100001234ull) == 0x1234);
}

TEST_CASE("translate_gva: paging modes the diagnostics do not walk") {
    Tables t;
    t.sregs.efer = 0;
    t.sregs.cr4 = 0; // 32-bit paging
    CHECK(contains(failure(t, 0x1000), "32-bit paging"));
    t.sregs.efer = 0x500;
    t.sregs.cr4 = 0x20 | 0x1000; // LA57
    CHECK(contains(failure(t, 0x1000), "5-level"));
}

TEST_CASE("read_guest_virtual: crosses into a physically discontiguous page") {
    Tables t;
    std::vector<std::uint8_t> a = {1, 2, 3, 4, 5, 6, 7, 8};
    std::vector<std::uint8_t> b = {9, 10, 11, 12, 13, 14, 15, 16};
    REQUIRE(t.mem.write(0x300ff8, a)); // last 8 bytes of PT[10]'s page
    REQUIRE(t.mem.write(0x280000, b)); // first 8 bytes of PT[11]'s page
    std::string why = "unchanged";
    const auto bytes = hv::read_guest_virtual(t.mem, t.sregs, va(1, 2, 3, 10, 0xff8), 16, &why);
    CHECK(bytes == std::vector<std::uint8_t>{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16});
    CHECK(why == "unchanged");
}

TEST_CASE("read_guest_virtual: stops at the first unmapped page and says why") {
    Tables t;
    std::vector<std::uint8_t> a(16, 0xcc);
    REQUIRE(t.mem.write(0x301ff0, a));
    std::string why;
    const auto bytes = hv::read_guest_virtual(t.mem, t.sregs, va(1, 2, 3, 12, 0xff0), 32, &why);
    CHECK(bytes == a);
    CHECK(contains(why, "not present at PT level"));
    // A null failure pointer is allowed.
    CHECK(hv::read_guest_virtual(t.mem, t.sregs, va(1, 2, 3, 12, 0xff0), 32, nullptr).size() == 16);
    // Nothing readable at all.
    why.clear();
    CHECK(hv::read_guest_virtual(t.mem, t.sregs, va(2, 0, 0, 0, 0), 8, &why).empty());
    CHECK(contains(why, "PML4"));
}

TEST_CASE("read_guest_virtual: a translated address outside RAM") {
    Tables t;
    std::string why;
    // The 1 GiB page maps to 0x40000000+, far beyond 4 MiB of RAM.
    CHECK(hv::read_guest_virtual(t.mem, t.sregs, (1ull << 39) | (7ull << 30), 8, &why).empty());
    CHECK(contains(why, "guest-physical 0x40000000"));
    CHECK(contains(why, "outside guest RAM"));
}

// The header promises "up to len bytes ..., stopping at the first unreadable
// byte". With RAM that does not end on a page boundary, the bytes before
// the end of RAM are readable and must be returned.
TEST_CASE("read_guest_virtual: returns the readable bytes before the end of RAM") {
    GuestMemory mem(0x2010); // RAM ends 16 bytes into its third page
    std::vector<std::uint8_t> tail(8, 0xf4);
    REQUIRE(mem.write(0x2008, tail));
    kvm_sregs sregs{};
    sregs.cr0 = 0x11; // paging off: gva == gpa
    std::string why;
    const auto bytes = hv::read_guest_virtual(mem, sregs, 0x2008, 32, &why);
    CHECK(bytes == tail);
    CHECK(contains(why, "outside guest RAM"));
}
