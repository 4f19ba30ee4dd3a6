// hv::build_acpi_tables' MADT (ACPI 6.5, 5.2.12), parsed back
// (acpi_blob.hpp): one enabled entry per vCPU, x2APIC entries from APIC ID
// 255 on, the IOAPIC, the IRQ 0 and SCI overrides, the NMI entries.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <set>
#include <vector>

#include "tests/support/acpi_blob.hpp"
#include "vmm/platform/acpi_tables.hpp"

using namespace hv::test::acpi;

TEST_CASE("ACPI tables: the MADT lists every vCPU once and enabled") {
    for (std::uint32_t n : {1u, 2u, 254u, 255u, 256u, 300u, 1024u}) {
        CAPTURE(n);
        const Blob b = build(n);
        const std::size_t madt = find_table(b, "APIC");
        CHECK(b.u32(madt + 36) == 0xfee00000); // local APIC address
        CHECK(b.u32(madt + 40) == 1);          // PCAT_COMPAT

        const std::vector<Cpu> cpus = madt_cpus(b);
        REQUIRE(cpus.size() == n);
        for (std::uint32_t i = 0; i < n; ++i) {
            CAPTURE(i);
            CHECK(cpus[i].apic_id == i); // in order: the boot CPU (APIC ID 0) first
            CHECK(cpus[i].uid == i);
            CHECK((cpus[i].flags & 1) == 1); // enabled
            // xAPIC entries up to 254 (255 is the broadcast ID), x2APIC above.
            CHECK(cpus[i].type == (i < 255 ? 0 : 9));
        }
        const std::size_t x2apic_nmis = entries_of_type(b, 10).size();
        CHECK(x2apic_nmis == (n > 255 ? 1u : 0u));
    }
}

TEST_CASE("ACPI tables: the MADT has the IOAPIC, the IRQ0 -> GSI 2 override and the SCI override") {
    const Blob b = build(2);

    const auto ioapics = entries_of_type(b, 1);
    REQUIRE(ioapics.size() == 1);
    const std::size_t io = ioapics[0].at;
    CHECK(b.u8(io + 1) == 12);
    CHECK(b.u8(io + 2) == 0);           // IOAPIC ID
    CHECK(b.u32(io + 4) == 0xfec00000); // address
    CHECK(b.u32(io + 8) == 0);          // GSI base

    // ISA IRQ 0 (the PIT) -> GSI 2, bus-conforming, as on a PC and QEMU
    // (KvmVm::create_pc_irqchip routes it there).
    const auto overrides = entries_of_type(b, 2);
    REQUIRE(overrides.size() == 2);
    const std::size_t irq0 = overrides[0].at;
    CHECK(b.u8(irq0 + 1) == 10);
    CHECK(b.u8(irq0 + 2) == 0); // bus: ISA
    CHECK(b.u8(irq0 + 3) == 0); // source IRQ
    CHECK(b.u32(irq0 + 4) == 2); // GSI
    CHECK(b.u16(irq0 + 8) == 0); // conforms to the bus: edge, active high

    // The SCI: ISA IRQ 9 -> GSI 9, level, active high.
    const std::size_t iso = overrides[1].at;
    CHECK(b.u8(iso + 1) == 10);
    CHECK(b.u8(iso + 2) == 0);          // bus: ISA
    CHECK(b.u8(iso + 3) == 9);          // source IRQ
    CHECK(b.u32(iso + 4) == 9);         // GSI
    CHECK(b.u16(iso + 8) == 0x000d);    // polarity 01 (high), trigger 11 (level)

    const auto nmis = entries_of_type(b, 4);
    REQUIRE(nmis.size() == 1);
    CHECK(b.u8(nmis[0].at + 1) == 6);
    CHECK(b.u8(nmis[0].at + 2) == 0xff); // all processors
    CHECK(b.u8(nmis[0].at + 5) == 1);    // LINT1
}

TEST_CASE("ACPI tables: the x2APIC NMI entry covers all x2APIC processors") {
    const Blob b = build(300);
    const auto nmis = entries_of_type(b, 10);
    REQUIRE(nmis.size() == 1);
    CHECK(b.u8(nmis[0].at + 1) == 12);
    CHECK(b.u32(nmis[0].at + 4) == 0xffffffff); // all processors
    CHECK(b.u8(nmis[0].at + 8) == 1);           // LINT1
}
