// hv::gdt_entry / write_gdt / write_identity_page_tables: the descriptor
// table and identity page tables a guest starts with. Expected descriptor
// and page-table bits are derived from the Intel SDM (Vol. 3A) in the
// comments, not copied from boot_setup.cpp.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "hv/abi.h"
#include "tests/support/boot_setup_fixture.hpp"
#include "vmm/boot/boot_setup.hpp"
#include "vmm/boot/guest_layout.hpp"
#include "vmm/kvm/guest_memory.hpp"

using hv::GuestMemory;
using namespace hv::test::boot_setup;

// ---------------------------------------------------------------------------
// GDT descriptors. SDM Vol. 3A, 3.4.5 "Segment Descriptors" (Figure 3-8):
//   bits  0-15 limit[15:0]        bits 16-39 base[23:0]
//   bits 40-43 type  44 S  45-46 DPL  47 P
//   bits 48-51 limit[19:16]       52 AVL  53 L  54 D/B  55 G
//   bits 56-63 base[31:24]
// gdt_entry's `flags` packs the access byte in bits 0-7 and G/DB/L/AVL in
// bits 12-15 (header comment in boot_setup.cpp: "packed as 0xF0FF").

TEST_CASE("gdt_entry: flat 64-bit code descriptor is 0x00AF9B000000FFFF") {
    // Access byte: P=1, DPL=00, S=1, type=1011 (code, execute/read, accessed)
    //   = 1001 1011 = 0x9B.  Flags nibble: G=1, D=0 (must be 0 with L=1), L=1, AVL=0
    //   = 1010 = 0xA.  Limit 0xFFFFF -> limit[15:0] = 0xFFFF, limit[19:16] = 0xF.
    //   base 0.  => 0x00 | A | F | 9B | 000000 | FFFF
    CHECK(hv::gdt_entry(0, 0xfffff, 0xA09B) == 0x00AF9B000000FFFFull);
}

TEST_CASE("gdt_entry: flat data and 32-bit code descriptors") {
    // Data: P=1, S=1, type=0011 (read/write, accessed) = 0x93; G=1, B=1 -> 0xC.
    CHECK(hv::gdt_entry(0, 0xfffff, 0xC093) == 0x00CF93000000FFFFull);
    // 32-bit code: 0x9B as above; G=1, D=1, L=0 -> 0xC.
    CHECK(hv::gdt_entry(0, 0xfffff, 0xC09B) == 0x00CF9B000000FFFFull);
}

TEST_CASE("gdt_entry: base and limit are split across the descriptor") {
    // base 0x12345678: base[23:0] = 0x345678 -> bits 16-39, base[31:24] = 0x12 -> bits 56-63.
    // limit 0xABCDE: limit[15:0] = 0xBCDE, limit[19:16] = 0xA.
    // flags 0x4092: access 0x92 (P, S, data read/write), nibble 0x4 (D/B only).
    //   => 0x12 | 4 | A | 92 | 345678 | BCDE
    CHECK(hv::gdt_entry(0x12345678, 0xABCDE, 0x4092) == 0x124A92345678BCDEull);
}

TEST_CASE("gdt_entry: limit bits above 19 and flag bits 8-11 cannot leak into other fields") {
    CHECK(hv::gdt_entry(0, 0xffffffff, 0) == hv::gdt_entry(0, 0xfffff, 0));
    CHECK(hv::gdt_entry(0, 0, 0x0F00) == 0); // would land on limit[19:16]
}

TEST_CASE("write_gdt: null descriptor and the three ABI selectors") {
    GuestMemory mem(4 * MiB);
    std::vector<std::uint8_t> junk(64, 0xAA);
    REQUIRE(mem.write(hv::layout::kGdt, junk));
    hv::write_gdt(mem);
    CHECK(read_u64(mem, hv::layout::kGdt + 0) == 0);
    CHECK(read_u64(mem, hv::layout::kGdt + HV_GDT_CODE64) == 0x00AF9B000000FFFFull);
    CHECK(read_u64(mem, hv::layout::kGdt + HV_GDT_DATA) == 0x00CF93000000FFFFull);
    CHECK(read_u64(mem, hv::layout::kGdt + HV_GDT_CODE32) == 0x00CF9B000000FFFFull);
}

// ---------------------------------------------------------------------------
// Identity page tables. SDM Vol. 3A, 4.5 "4-Level Paging", Tables 4-15/4-17/4-18:
//   bit 0 P, bit 1 R/W, bit 7 PS (in a PDE: maps a 2 MiB page);
//   a PML4E/PDPTE holds the 4 KiB-aligned physical address of the next table.

TEST_CASE("write_identity_page_tables: 4 GiB minimum with 2 MiB pages") {
    GuestMemory mem(8 * MiB);
    CHECK(hv::write_identity_page_tables(mem) == 4);

    // PML4[0] -> PDPT at 0x3000, P|RW = 0x3 -> 0x3003. PML4[1] is absent.
    CHECK(read_u64(mem, 0x2000) == 0x3003);
    CHECK(read_u64(mem, 0x2000 + 8) == 0);
    // PDPT[g] -> page directory g at 0x4000 + g * 0x1000, P|RW.
    CHECK(read_u64(mem, 0x3000 + 0 * 8) == 0x4003);
    CHECK(read_u64(mem, 0x3000 + 1 * 8) == 0x5003);
    CHECK(read_u64(mem, 0x3000 + 3 * 8) == 0x7003);
    CHECK(read_u64(mem, 0x3000 + 4 * 8) == 0); // 4 GiB and up: not mapped
    // PD0[0] maps [0, 2 MiB): P|RW|PS = 0x1 | 0x2 | 0x80 = 0x83.
    CHECK(read_u64(mem, 0x4000) == 0x83);
    // PD0[1] maps [2 MiB, 4 MiB): 0x200000 | 0x83.
    CHECK(read_u64(mem, 0x4000 + 8) == 0x200083);
    // gva 0xC0A00000 = GiB 3, PD index (0xC0A00000 >> 21) & 511 = 0x605 & 0x1ff = 5.
    CHECK(read_u64(mem, 0x7000 + 5 * 8) == 0xC0A00083);
    // The last 2 MiB below 4 GiB: PD3[511] = 0xFFE00000 | 0x83 (e.g. the LAPIC page).
    CHECK(read_u64(mem, 0x7000 + 511 * 8) == 0xFFE00083);
}

TEST_CASE("write_identity_page_tables: RAM above 4 GiB maps RAM rounded up to 1 GiB") {
    // 5 GiB + 4 KiB of RAM -> 6 GiB mapped (only a few pages are ever touched).
    auto big = big_memory(5 * GiB + 4096);
    if (!big) return;
    GuestMemory& mem = *big;
    CHECK(hv::write_identity_page_tables(mem) == 6);
    CHECK(read_u64(mem, 0x3000 + 5 * 8) == ((0x4000 + 5 * 0x1000) | 0x3));
    CHECK(read_u64(mem, 0x3000 + 6 * 8) == 0);
    // PD5[0] maps 5 GiB = 0x140000000.
    CHECK(read_u64(mem, 0x4000 + 5 * 0x1000) == (0x140000000ull | 0x83));
    CHECK(read_u64(mem, 0x4000 + 5 * 0x1000 + 511 * 8) == ((6 * GiB - 2 * MiB) | 0x83));
}

TEST_CASE("write_identity_page_tables: exactly 4 GiB does not round up") {
    auto big = big_memory(4 * GiB);
    if (!big) return;
    GuestMemory& mem = *big;
    CHECK(hv::write_identity_page_tables(mem) == 4);
    CHECK(read_u64(mem, 0x3000 + 4 * 8) == 0);
}
