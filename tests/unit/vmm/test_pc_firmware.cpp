// hv::write_pc_firmware: the tables a guest finds in low memory on the PC
// platform, searched for the way a guest searches (16-byte boundaries in
// the EBDA's first KiB and the BIOS area 0xE0000-0xFFFFF).
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>

#include "tests/support/boot_setup_fixture.hpp"
#include "vmm/boot/guest_layout.hpp"
#include "vmm/boot/pc_firmware.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/platform/acpi_tables.hpp"
#include "vmm/platform/mp_table.hpp"

using hv::GuestMemory;
using hv::test::boot_setup::MiB;
using hv::test::boot_setup::read_obj;

namespace {

std::uint8_t checksum(const GuestMemory& mem, std::uint64_t gpa, std::uint64_t len) {
    std::uint8_t sum = 0;
    for (std::uint64_t i = 0; i < len; ++i) sum = static_cast<std::uint8_t>(sum + read_obj<std::uint8_t>(mem, gpa + i));
    return sum;
}

bool signature_at(const GuestMemory& mem, std::uint64_t gpa, const char* sig) {
    for (std::size_t i = 0; sig[i]; ++i)
        if (read_obj<std::uint8_t>(mem, gpa + i) != static_cast<std::uint8_t>(sig[i])) return false;
    return true;
}

// The first 16-byte-aligned `sig` in [from, to).
std::optional<std::uint64_t> scan(const GuestMemory& mem, std::uint64_t from, std::uint64_t to, const char* sig) {
    for (std::uint64_t a = from; a + 16 <= to; a += 16)
        if (signature_at(mem, a, sig)) return a;
    return std::nullopt;
}

// Where a guest looks: the EBDA's first KiB (segment at 0x40e), then the BIOS area.
std::optional<std::uint64_t> guest_scan(const GuestMemory& mem, const char* sig) {
    const std::uint64_t ebda = std::uint64_t{read_obj<std::uint16_t>(mem, 0x40e)} << 4;
    if (auto a = scan(mem, ebda, ebda + 1024, sig)) return a;
    return scan(mem, 0xe0000, 0x100000, sig);
}

} // namespace

TEST_CASE("write_pc_firmware: the BIOS data area names a 1 KiB EBDA at the end of 639 KiB of conventional memory") {
    GuestMemory mem(8 * MiB);
    hv::write_pc_firmware(mem, 2);
    CHECK(read_obj<std::uint16_t>(mem, 0x40e) == 0x9fc0);
    CHECK(read_obj<std::uint16_t>(mem, 0x413) == 639);
    CHECK(read_obj<std::uint8_t>(mem, 0x9fc00) == 1); // the EBDA's size in KiB
}

TEST_CASE("write_pc_firmware: a guest's scan finds the RSDP at 0xE0000 with a valid checksum") {
    GuestMemory mem(8 * MiB);
    hv::write_pc_firmware(mem, 4);
    const auto rsdp = guest_scan(mem, "RSD PTR ");
    REQUIRE(rsdp);
    CHECK(*rsdp == hv::layout::kAcpiTables);
    CHECK(checksum(mem, *rsdp, 20) == 0);
    CHECK(checksum(mem, *rsdp, read_obj<std::uint32_t>(mem, *rsdp + 20)) == 0); // extended checksum (revision 2)
    const std::uint64_t xsdt = read_obj<std::uint64_t>(mem, *rsdp + 24);
    CHECK(signature_at(mem, xsdt, "XSDT"));
}

TEST_CASE("write_pc_firmware: a guest's scan finds the MP floating pointer and its configuration table") {
    GuestMemory mem(8 * MiB);
    hv::write_pc_firmware(mem, 3);
    const auto mp = guest_scan(mem, "_MP_");
    REQUIRE(mp);
    CHECK(*mp == hv::layout::kMpTable);
    CHECK(checksum(mem, *mp, 16) == 0);
    const std::uint32_t table = read_obj<std::uint32_t>(mem, *mp + 4);
    CHECK(signature_at(mem, table, "PCMP"));
    CHECK(checksum(mem, table, read_obj<std::uint16_t>(mem, table + 4)) == 0);
    // Three processor entries come first (type 0).
    CHECK(read_obj<std::uint16_t>(mem, table + 34) >= 3);
    CHECK(read_obj<std::uint8_t>(mem, table + 44) == 0);
    CHECK(read_obj<std::uint8_t>(mem, table + 44 + 2 * 20) == 0);
}

TEST_CASE("write_pc_firmware: at 1024 vCPUs the ACPI tables end before the MP table, which ends below 1 MiB") {
    hv::AcpiPlatform acpi;
    acpi.cpus = 1024;
    CHECK(hv::layout::kAcpiTables + hv::build_acpi_tables(acpi, hv::layout::kAcpiTables).size() <= hv::layout::kMpTable);
    CHECK(hv::layout::kMpTable + hv::build_mp_table(acpi, hv::layout::kMpTable).size() <= 0x100000);
    GuestMemory mem(8 * MiB);
    hv::write_pc_firmware(mem, 1024);
    CHECK(guest_scan(mem, "RSD PTR ") == hv::layout::kAcpiTables);
    CHECK(guest_scan(mem, "_MP_") == hv::layout::kMpTable);
}
