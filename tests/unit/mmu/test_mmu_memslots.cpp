// MemslotTable: validation with clear errors, aliasing, both lookups.
#include "mmu/base/units.hpp"
#include "mmu/secondary/memslots.hpp"
#include "tests/support/text_match.hpp"

#include <doctest/doctest.h>

#include <string>

using namespace hv::mmu;
using hv::test::message_of;

namespace {
constexpr std::uint64_t MiB = 1 << 20;
std::string error_of(MemslotTable& t, const Memslot& s) {
    return message_of<MemslotError>([&] { t.add(s); });
}
} // namespace

TEST_CASE("memslots: translate guest to host inside a slot, nothing outside") {
    MemslotTable t;
    t.add({1, 16 * MiB, 4 * MiB, 0x7f0000000000, true});
    CHECK(t.guest_to_host(16 * MiB) == 0x7f0000000000);
    CHECK(t.guest_to_host(20 * MiB - 1) == 0x7f0000000000 + 4 * MiB - 1);
    CHECK_FALSE(t.guest_to_host(20 * MiB));
    CHECK_FALSE(t.guest_to_host(16 * MiB - 1));
    REQUIRE(t.find_guest(17 * MiB));
    CHECK(t.find_guest(17 * MiB)->id == 1);
}

TEST_CASE("memslots: rejected slots say why and change nothing") {
    MemslotTable t;
    t.add({1, 16 * MiB, 4 * MiB, 0x100000000, true});
    CHECK(error_of(t, {2, 18 * MiB, 4 * MiB, 0x200000000, true}).find("overlaps slot 1") != std::string::npos);
    CHECK(error_of(t, {2, 12 * MiB, 8 * MiB, 0x200000000, true}).find("overlaps") != std::string::npos);
    CHECK(error_of(t, {2, 17 * MiB, kPage, 0x200000000, true}).find("overlaps") != std::string::npos);
    CHECK(error_of(t, {2, 32 * MiB + 1, kPage, 0, true}).find("4 KiB aligned") != std::string::npos);
    CHECK(error_of(t, {2, 32 * MiB, 100, 0, true}).find("4 KiB aligned") != std::string::npos);
    CHECK(error_of(t, {2, 32 * MiB, kPage, 0x10, true}).find("4 KiB aligned") != std::string::npos);
    CHECK(error_of(t, {2, 32 * MiB, 0, 0, true}).find("size is 0") != std::string::npos);
    CHECK(error_of(t, {2, (1ull << 47) - kPage, 2 * kPage, 0, true}).find("below") != std::string::npos);
    CHECK(error_of(t, {2, 32 * MiB, kPage, 1ull << 47, true}).find("below") != std::string::npos);
    CHECK(error_of(t, {1, 64 * MiB, kPage, 0, true}).find("already in use") != std::string::npos);
    CHECK(t.size() == 1);
    CHECK(error_of(t, {2, 20 * MiB, kPage, 0, true}) == ""); // adjacent is fine
}

TEST_CASE("memslots: an alias maps a second guest range onto the same host range") {
    MemslotTable t;
    t.add({1, 0x100000, 0x10000, 0x500000000, true});
    t.alias(1, 7, 0x800000);
    CHECK(t.guest_to_host(0x800000 + 0x2345) == t.guest_to_host(0x100000 + 0x2345));
    const auto ranges = t.host_to_guest(0x500000000 + 0x1000, 0x500000000 + 0x3000);
    REQUIRE(ranges.size() == 2);
    CHECK(ranges[0] == GuestRange{0x101000, 0x103000});
    CHECK(ranges[1] == GuestRange{0x801000, 0x803000});
    CHECK_THROWS_AS(t.alias(99, 8, 0x900000), MemslotError);
    CHECK_THROWS_AS(t.alias(1, 8, 0x108000), MemslotError); // overlaps slot 1's guest range
}

TEST_CASE("memslots: host_to_guest clips to the slot, remove forgets it") {
    MemslotTable t;
    t.add({1, 0x200000, 0x4000, 0x10000, true});
    CHECK(t.host_to_guest(0, 0x100000) == std::vector<GuestRange>{{0x200000, 0x204000}});
    CHECK(t.host_to_guest(0x13000, 0x20000) == std::vector<GuestRange>{{0x203000, 0x204000}});
    CHECK(t.host_to_guest(0x14000, 0x20000).empty());
    CHECK(t.remove(1).guest_start == 0x200000);
    CHECK_FALSE(t.guest_to_host(0x200000));
    CHECK_THROWS_AS(t.remove(1), MemslotError);
}
