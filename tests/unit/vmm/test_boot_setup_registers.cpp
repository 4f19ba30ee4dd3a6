// hv::setup_sregs / initial_regs: the control registers, segments and
// general registers a guest starts with. Expected bits are derived from the
// Intel SDM (Vol. 3A) and the boot ABI in the comments, not copied from
// boot_setup.cpp.
#include <doctest/doctest.h>

#include <cstdint>

#include "hv/abi.h"
#include "tests/support/boot_setup_fixture.hpp"
#include "vmm/boot/boot_image.hpp"
#include "vmm/boot/boot_setup.hpp"
#include "vmm/boot/guest_layout.hpp"
#include "vmm/kvm/guest_memory.hpp"

using hv::BootConfig;
using hv::BootInfo;
using hv::GuestMemory;
using hv::ImageKind;
using namespace hv::test::boot_setup;

// ---------------------------------------------------------------------------
// setup_sregs. SDM Vol. 3A 2.5 (CR0, CR4) and 2.2.1 / Vol. 4 (IA32_EFER):
//   CR0: PE bit 0, MP 1, NE 5, WP 16, PG 31; CD 30 and NW 29 must be clear.
//   CR4: PAE bit 5, OSFXSR 9, OSXMMEXCPT 10, LA57 12.
//   EFER: SCE bit 0, LME 8, LMA 10, NXE 11.

namespace {
kvm_sregs reset_sregs() {
    kvm_sregs s{};
    s.apic_base = 0xfee00900; // KVM's reset value; must survive setup_sregs
    s.cr0 = 0x60000010;       // CD|NW|ET at reset
    s.cs.selector = 0xf000;
    s.cs.base = 0xffff0000;
    return s;
}
} // namespace

TEST_CASE("setup_sregs ELF64: long mode with paging, 64-bit CS") {
    kvm_sregs s = reset_sregs();
    hv::setup_sregs(s, ImageKind::Elf64);

    const std::uint64_t cr0_required = (1ull << 0) | (1ull << 1) | (1ull << 5) | (1ull << 16) | (1ull << 31);
    CHECK((s.cr0 & cr0_required) == cr0_required);
    CHECK((s.cr0 & ((1ull << 30) | (1ull << 29))) == 0); // caches on
    const std::uint64_t cr4_required = (1ull << 5) | (1ull << 9) | (1ull << 10);
    CHECK((s.cr4 & cr4_required) == cr4_required);
    CHECK((s.cr4 & (1ull << 12)) == 0); // 4-level paging, which is what we built
    CHECK(s.efer == ((1ull << 0) | (1ull << 8) | (1ull << 10) | (1ull << 11))); // 0xd01
    CHECK(s.cr3 == hv::layout::kPml4);

    CHECK(s.cs.selector == HV_GDT_CODE64);
    CHECK(s.cs.l == 1);
    CHECK(s.cs.db == 0); // D must be 0 when L is 1
    CHECK(s.cs.present == 1);
    CHECK(s.cs.s == 1);
    CHECK(s.cs.type == 0xB);
    CHECK(s.cs.dpl == 0);
    CHECK(s.cs.base == 0);
    for (const kvm_segment* seg : {&s.ds, &s.es, &s.fs, &s.gs, &s.ss}) {
        CHECK(seg->selector == HV_GDT_DATA);
        CHECK(seg->present == 1);
        CHECK(seg->type == 0x3);
        CHECK(seg->s == 1);
        CHECK(seg->base == 0);
    }
    CHECK(s.gdt.base == hv::layout::kGdt);
    CHECK(s.gdt.limit == 4 * 8 - 1); // null + three descriptors
    CHECK(s.apic_base == 0xfee00900);
}

TEST_CASE("setup_sregs: the hidden CS/SS state matches the GDT descriptors") {
    // Decode the in-memory descriptors by the SDM layout and compare them to
    // the cached segment state KVM will load.
    GuestMemory mem(4 * MiB);
    hv::write_gdt(mem);
    auto check_matches = [&](const kvm_segment& seg) {
        CAPTURE(seg.selector);
        const std::uint64_t d = read_u64(mem, hv::layout::kGdt + (seg.selector & ~7u));
        CHECK(seg.type == ((d >> 40) & 0xf));
        CHECK(seg.s == ((d >> 44) & 1));
        CHECK(seg.dpl == ((d >> 45) & 3));
        CHECK(seg.present == ((d >> 47) & 1));
        CHECK(seg.l == ((d >> 53) & 1));
        CHECK(seg.db == ((d >> 54) & 1));
        CHECK(seg.g == ((d >> 55) & 1));
        const std::uint64_t limit = (d & 0xffff) | (((d >> 48) & 0xf) << 16);
        CHECK(seg.limit == (((d >> 55) & 1) ? (limit << 12) | 0xfff : limit));
    };
    for (ImageKind kind : {ImageKind::Elf64, ImageKind::Multiboot}) {
        kvm_sregs s = reset_sregs();
        hv::setup_sregs(s, kind);
        check_matches(s.cs);
        check_matches(s.ss);
        check_matches(s.ds);
    }
}

TEST_CASE("setup_sregs multiboot: 32-bit protected mode, paging off") {
    kvm_sregs s = reset_sregs();
    hv::setup_sregs(s, ImageKind::Multiboot);
    CHECK((s.cr0 & 1) == 1);                    // PE
    CHECK((s.cr0 & (1ull << 31)) == 0);         // PG off
    CHECK((s.cr0 & ((1ull << 30) | (1ull << 29))) == 0);
    CHECK((s.cr4 & (1ull << 5)) == 0);          // no PAE
    CHECK((s.efer & ((1ull << 8) | (1ull << 10))) == 0); // no LME/LMA
    CHECK(s.cs.selector == HV_GDT_CODE32);
    CHECK(s.cs.l == 0);
    CHECK(s.cs.db == 1); // 32-bit default operand size
    CHECK(s.cs.base == 0);
    CHECK(s.ss.selector == HV_GDT_DATA);
    CHECK(s.ss.db == 1); // 32-bit stack pointer (ESP)
    CHECK(s.apic_base == 0xfee00900);
}

// ---------------------------------------------------------------------------
// initial_regs: the boot ABI in guest/include/hv/abi.h.

TEST_CASE("initial_regs ELF64: RDI/RSI/RDX/RCX/RSP per vCPU") {
    BootInfo info;
    info.kind = ImageKind::Elf64;
    info.entry = 0x100040;
    info.cmdline_gpa = 0x54000;
    BootConfig config;
    config.ram_size = 8 * MiB;
    config.cpus = 3;
    for (std::uint32_t vcpu = 0; vcpu < 3; ++vcpu) {
        CAPTURE(vcpu);
        const kvm_regs r = hv::initial_regs(info, config, vcpu);
        CHECK(r.rip == 0x100040);
        CHECK(r.rdi == vcpu);
        CHECK(r.rsi == 3);
        CHECK(r.rdx == 0x54000);
        CHECK(r.rcx == 8 * MiB);
        // vCPU i owns [ram - (i+1)*16K, ram - i*16K): its stack top is ram - i*16K.
        CHECK(r.rsp == 8 * MiB - vcpu * 0x4000ull);
        CHECK(r.rsp % 16 == 0);
        CHECK((r.rflags & (1u << 9)) == 0); // IF clear
        CHECK((r.rflags & (1u << 1)) != 0); // reserved bit 1 is always 1
    }
}

TEST_CASE("initial_regs multiboot: EAX magic, EBX info, ESP at the top of RAM") {
    BootInfo info;
    info.kind = ImageKind::Multiboot;
    info.entry = 0x100000;
    info.multiboot_info = 0x50000;
    BootConfig config;
    config.ram_size = 16 * MiB;
    const kvm_regs r = hv::initial_regs(info, config, 0);
    CHECK(r.rax == 0x2BADB002); // Multiboot Specification 3.2, "Machine state"
    CHECK(r.rbx == 0x50000);
    CHECK(r.rip == 0x100000);
    CHECK(r.rsp == 16 * MiB);
    CHECK((r.rflags & (1u << 9)) == 0);
}
