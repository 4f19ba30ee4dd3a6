// hv::build_mp_table: the blob is parsed back the way an OS finds it
// (floating pointer -> configuration table -> entries), with layouts from
// the Intel MultiProcessor Specification 1.4 (4.1-4.3), not from
// mp_table.cpp, and checked against the ACPI MADT for the same platform.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "tests/support/table_blob.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/platform/acpi_tables.hpp"
#include "vmm/platform/mp_table.hpp"

namespace {

constexpr std::uint64_t kBase = 0xf0000;

using Bytes = hv::test::TableBlob;

struct Entry {
    std::uint8_t type;
    std::size_t at;
};

// The parsed blob: the configuration table's offset and its entries, after
// checking both structures' signatures, lengths and checksums.
struct Mp {
    Bytes b;
    std::size_t table = 0;
    std::vector<Entry> entries;

    std::vector<Entry> of_type(std::uint8_t type) const {
        std::vector<Entry> found;
        for (const Entry& e : entries)
            if (e.type == type) found.push_back(e);
        return found;
    }
};

Mp parse(const hv::AcpiPlatform& platform, std::uint64_t base = kBase) {
    Mp mp;
    mp.b = Bytes{hv::build_mp_table(platform, base), base};
    const Bytes& b = mp.b;
    // Floating pointer: "_MP_", table address, length in paragraphs, revision, checksum, features.
    REQUIRE(b.text(0, 4) == "_MP_");
    CHECK(b.u8(8) == 1);
    CHECK(b.u8(9) == 4);
    CHECK(b.sum(0, 16) == 0);
    CHECK(b.u8(11) == 0);           // feature 1: a configuration table is present
    CHECK((b.u8(12) & 0x80) == 0);  // feature 2 IMCRP: virtual-wire mode
    CHECK(b.u32(12) == 0);          // features 2-5 all clear
    REQUIRE(b.u32(4) >= base);
    mp.table = b.u32(4) - base;
    const std::size_t t = mp.table;

    REQUIRE(b.text(t, 4) == "PCMP");
    const std::size_t length = b.u16(t + 4);
    REQUIRE(t + length <= b.bytes.size());
    CHECK(t + length == b.bytes.size()); // the table ends the blob
    CHECK(b.u8(t + 6) == 4);
    CHECK(b.sum(t, length) == 0);
    CHECK(b.text(t + 8, 8).size() == 8);
    CHECK(b.u32(t + 28) == 0); // OEM table pointer
    CHECK(b.u16(t + 32) == 0); // OEM table size
    CHECK(b.u32(t + 36) == platform.lapic_address);
    CHECK(b.u16(t + 40) == 0); // extended table length
    CHECK(b.u8(t + 42) == 0);  // extended table checksum

    std::size_t at = t + 44;
    std::uint8_t previous_type = 0;
    while (at < t + length) {
        const std::uint8_t type = b.u8(at);
        REQUIRE(type <= 4);
        CHECK(type >= previous_type); // entries sorted by type, as the spec requires
        previous_type = type;
        mp.entries.push_back({type, at});
        at += type == 0 ? 20 : 8;
    }
    CHECK(at == t + length);
    CHECK(b.u16(t + 34) == mp.entries.size()); // entry count
    return mp;
}

hv::AcpiPlatform with_cpus(std::uint32_t cpus) {
    hv::AcpiPlatform p;
    p.cpus = cpus;
    return p;
}

// ISA IRQ -> (pin, flags) as the MP table's INT entries give it.
std::map<unsigned, std::pair<unsigned, unsigned>> isa_routes(const Mp& mp) {
    std::map<unsigned, std::pair<unsigned, unsigned>> routes;
    for (const Entry& e : mp.of_type(3)) {
        CHECK(mp.b.u8(e.at + 1) == 0); // INT
        CHECK(routes.count(mp.b.u8(e.at + 5)) == 0);
        routes[mp.b.u8(e.at + 5)] = {mp.b.u8(e.at + 7), mp.b.u16(e.at + 2)};
    }
    return routes;
}

} // namespace

TEST_CASE("build_mp_table: one enabled processor entry per CPU, CPU 0 the only BSP") {
    for (std::uint32_t cpus : {1u, 2u, 4u, 254u, 255u, 256u, 1024u}) {
        CAPTURE(cpus);
        const Mp mp = parse(with_cpus(cpus));
        const auto processors = mp.of_type(0);
        REQUIRE(processors.size() == std::min(cpus, 255u));
        int bsps = 0;
        for (std::size_t i = 0; i < processors.size(); ++i) {
            const std::size_t at = processors[i].at;
            CAPTURE(i);
            CHECK(mp.b.u8(at + 1) == i);                 // APIC ID = vCPU index, 0..254
            CHECK(mp.b.u8(at + 2) == 0x14);              // KVM's xAPIC version
            CHECK((mp.b.u8(at + 3) & 1) == 1);           // enabled
            if (mp.b.u8(at + 3) & 2) {
                ++bsps;
                CHECK(i == 0);
            }
            CHECK(mp.b.u32(at + 4) == 0x600);            // CPU signature: family 6
            CHECK(mp.b.u32(at + 8) == ((1u << 0) | (1u << 9))); // FPU, APIC
        }
        CHECK(bsps == 1);
        CHECK(mp.entries.size() == processors.size() + 19);
    }
}

TEST_CASE("build_mp_table: the ISA bus, the IOAPIC and the interrupt entries refer to each other") {
    hv::AcpiPlatform platform;
    platform.cpus = 2;
    platform.ioapic_id = 3;
    platform.ioapic_address = 0xfec01000;
    platform.lapic_address = 0xfee10000;
    const Mp mp = parse(platform);

    const auto buses = mp.of_type(1);
    REQUIRE(buses.size() == 1);
    const std::uint8_t bus_id = mp.b.u8(buses[0].at + 1);
    CHECK(mp.b.text(buses[0].at + 2, 6) == "ISA   ");

    const auto ioapics = mp.of_type(2);
    REQUIRE(ioapics.size() == 1);
    const std::uint8_t ioapic_id = mp.b.u8(ioapics[0].at + 1);
    CHECK(ioapic_id == 3);
    CHECK(mp.b.u8(ioapics[0].at + 2) == 0x11);     // KVM's in-kernel IOAPIC version
    CHECK((mp.b.u8(ioapics[0].at + 3) & 1) == 1);  // enabled
    CHECK(mp.b.u32(ioapics[0].at + 4) == 0xfec01000);

    std::set<unsigned> pins;
    for (const Entry& e : mp.of_type(3)) {
        CHECK(mp.b.u8(e.at + 4) == bus_id);    // source bus
        CHECK(mp.b.u8(e.at + 6) == ioapic_id); // destination IOAPIC
        CHECK(mp.b.u8(e.at + 1) != 3);         // no ExtINT on the IOAPIC
        CHECK(pins.insert(mp.b.u8(e.at + 7)).second); // one entry per pin
    }

    // ISA IRQs 0-15 but the cascade, identity-mapped but IRQ 0 (the PIT) on
    // pin 2; only the SCI is level/high.
    const auto routes = isa_routes(mp);
    CHECK(routes.size() == 15);
    CHECK(routes.count(2) == 0);
    for (const auto& [isa_irq, route] : routes) {
        const unsigned irq = isa_irq; // a plain variable: CAPTURE cannot take a structured binding on clang 14
        CAPTURE(irq);
        CHECK(irq < 16);
        CHECK(route.first == (irq == 0 ? 2u : irq));
        CHECK(route.second == (irq == 9 ? 0x000d : 0x0000)); // 01 active high, 11 level; else conforming
    }

    const auto locals = mp.of_type(4);
    REQUIRE(locals.size() == 2);
    std::map<unsigned, unsigned> lint_of_type;
    for (const Entry& e : locals) {
        CHECK(mp.b.u16(e.at + 2) == 0);     // conforming
        CHECK(mp.b.u8(e.at + 4) == bus_id);
        CHECK(mp.b.u8(e.at + 6) == 0xff);   // every local APIC
        lint_of_type[mp.b.u8(e.at + 1)] = mp.b.u8(e.at + 7);
    }
    CHECK(lint_of_type == std::map<unsigned, unsigned>{{3, 0}, {1, 1}}); // ExtINT -> LINT0, NMI -> LINT1
}

TEST_CASE("build_mp_table: the SCI follows sci_irq") {
    hv::AcpiPlatform platform;
    platform.sci_irq = 11;
    const auto routes = isa_routes(parse(platform));
    CHECK(routes.at(11).second == 0x000d);
    CHECK(routes.at(9).second == 0);
}

TEST_CASE("build_mp_table: the interrupt routing agrees with the ACPI MADT") {
    for (std::uint8_t sci : {std::uint8_t{9}, std::uint8_t{10}}) {
        CAPTURE(sci);
        hv::AcpiPlatform acpi;
        acpi.cpus = 4;
        acpi.sci_irq = sci;
        const Mp mp = parse(acpi);

        // Walk RSDP -> XSDT -> MADT (ACPI 6.5 5.2.5, 5.2.8, 5.2.12).
        const Bytes acpi_blob{hv::build_acpi_tables(acpi, 0xe0000), 0xe0000};
        const std::size_t xsdt = acpi_blob.le(24, 8) - acpi_blob.base;
        std::size_t madt = 0;
        for (std::size_t at = xsdt + 36; at < xsdt + acpi_blob.u32(xsdt + 4); at += 8) {
            const std::size_t table = acpi_blob.le(at, 8) - acpi_blob.base;
            if (acpi_blob.text(table, 4) == "APIC") madt = table;
        }
        REQUIRE(madt != 0);
        CHECK(acpi_blob.u32(madt + 36) == mp.b.u32(mp.table + 36)); // local APIC address
        std::map<unsigned, std::pair<unsigned, unsigned>> overrides; // ISA IRQ -> (GSI, flags)
        std::size_t madt_cpus = 0;
        for (std::size_t at = madt + 44; at < madt + acpi_blob.u32(madt + 4); at += acpi_blob.u8(at + 1)) {
            if (acpi_blob.u8(at) == 0) ++madt_cpus;
            if (acpi_blob.u8(at) == 1) { // IOAPIC: ID and address as in the MP table, GSI base 0
                const auto ioapic = mp.of_type(2).at(0).at;
                CHECK(acpi_blob.u8(at + 2) == mp.b.u8(ioapic + 1));
                CHECK(acpi_blob.u32(at + 4) == mp.b.u32(ioapic + 4));
                CHECK(acpi_blob.u32(at + 8) == 0);
            }
            if (acpi_blob.u8(at) == 2) overrides[acpi_blob.u8(at + 3)] = {acpi_blob.u32(at + 4), acpi_blob.u16(at + 8)};
        }
        CHECK(madt_cpus == mp.of_type(0).size());

        // Every ISA IRQ the MP table routes reaches the same IOAPIC pin (GSI)
        // with the same flags as the MADT says: its override, else identity
        // and conforming.
        for (const auto& [isa_irq, route] : isa_routes(mp)) {
            const unsigned irq = isa_irq;
            CAPTURE(irq);
            const auto found = overrides.find(irq);
            if (found != overrides.end()) {
                CHECK(route == found->second);
            } else {
                CHECK(route == std::pair<unsigned, unsigned>{irq, 0});
            }
        }
        for (const auto& entry : overrides) CHECK(isa_routes(mp).count(entry.first) == 1);
    }
}

TEST_CASE("build_mp_table: 1024 CPUs list 255 processors and still fit below 1 MiB") {
    const Mp mp = parse(with_cpus(1024));
    CHECK(mp.of_type(0).size() == 255);
    CHECK(mp.b.bytes.size() == 16 + 44 + 255 * 20 + 19 * 8);
    CHECK(parse(with_cpus(1024)).b.bytes == parse(with_cpus(255)).b.bytes);
}

TEST_CASE("build_mp_table: the floating pointer names the table's guest-physical address") {
    for (std::uint64_t base : {std::uint64_t{0xf0000}, std::uint64_t{0x9fc00}, std::uint64_t{0xfff00}}) {
        CAPTURE(base);
        const Mp mp = parse(with_cpus(2), base);
        CHECK(mp.b.u32(4) == base + 16);
    }
}

TEST_CASE("build_mp_table: bad base addresses are refused") {
    CHECK_THROWS_WITH_AS(hv::build_mp_table(with_cpus(1), kBase + 8), doctest::Contains("0xf0008: expected a 16-byte aligned"),
                         hv::VmmError);
    const std::size_t size = hv::build_mp_table(with_cpus(2), kBase).size();
    const std::uint64_t highest = (0x100000 - size) & ~std::uint64_t{15};
    CHECK(hv::build_mp_table(with_cpus(2), highest).size() == size);
    CHECK_THROWS_WITH_AS(hv::build_mp_table(with_cpus(2), highest + 16),
                         doctest::Contains("expected it to end at or below 1 MiB"), hv::VmmError);
    CHECK_THROWS_AS(hv::build_mp_table(with_cpus(1), 0x100000), hv::VmmError);
    CHECK_THROWS_AS(hv::build_mp_table(with_cpus(1), 0xfffffffffffffff0), hv::VmmError);
    CHECK_THROWS_WITH_AS(hv::build_mp_table(with_cpus(255), 0xfff00), doctest::Contains("255 vCPUs at 0xfff00 takes 5312 bytes"),
                         hv::VmmError);
}

TEST_CASE("build_mp_table: the CPU count must be 1 to 1024 and the SCI a free ISA IRQ") {
    CHECK_THROWS_WITH_AS(hv::build_mp_table(with_cpus(0), kBase), doctest::Contains("0 vCPUs requested; expected 1 to 1024"),
                         hv::VmmError);
    CHECK_THROWS_WITH_AS(hv::build_mp_table(with_cpus(1025), kBase),
                         doctest::Contains("1025 vCPUs requested; expected 1 to 1024"), hv::VmmError);
    for (std::uint8_t sci : {std::uint8_t{0}, std::uint8_t{2}, std::uint8_t{16}, std::uint8_t{255}}) {
        CAPTURE(sci);
        hv::AcpiPlatform platform;
        platform.sci_irq = sci;
        const std::string expected = "SCI IRQ " + std::to_string(sci) + "; expected an ISA IRQ";
        CHECK_THROWS_WITH_AS(hv::build_mp_table(platform, kBase), doctest::Contains(expected.c_str()), hv::VmmError);
    }
}
