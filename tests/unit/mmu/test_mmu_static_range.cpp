// ShadowMmu static ranges: the identity-mapped code and stacks of a KVM guest
// in shadow mode live in the same secondary table as the demand-mapped
// workload, but no memslot, zap, rmap link or notifier ever touches them.
#include "mmu/secondary/shadow_mmu.hpp"

#include <doctest/doctest.h>

#include <cstdint>
#include <cstdlib>
#include <span>
#include <string>
#include <vector>

using namespace hv::mmu;

namespace {

constexpr std::uint64_t kHost = 0x7f0000000000;
constexpr std::uint64_t kWorkload = 0x10000000000; // guest addresses of the memslot

// 4096 frames of which [0, 1024) are not allocatable: the static frames,
// as the VMM keeps guest code and stacks out of the MMU's allocator.
constexpr Pfn kFrames = 4096, kFirstAllocatable = 1024;

struct Memory {
    std::uint8_t* bytes = static_cast<std::uint8_t*>(std::aligned_alloc(kPage, kFrames * kPage));
    ~Memory() { std::free(bytes); }
};

struct StaticRig {
    Memory memory;
    FrameSpace frames;
    HostAddressSpace host;
    ShadowMmu mmu;
    explicit StaticRig(Pfn end_allocatable = kFrames)
        : frames(std::span(memory.bytes, kFrames * kPage), kFirstAllocatable, end_allocatable), host(frames),
          mmu(host, {}) {}
};

} // namespace

TEST_CASE("static range: identity entries with the static bit, outside every memslot") {
    StaticRig r;
    r.mmu.map_static(0x100000, 16 * kPage, 0x100, true);
    for (std::uint64_t i = 0; i < 16; ++i) {
        const std::uint64_t e = r.mmu.entry(0x100000 + i * kPage);
        REQUIRE(X86PteFormat::present(e));
        CHECK(X86PteFormat::pfn(e) == 0x100 + i);
        CHECK(X86PteFormat::writable(e));
        CHECK((e & ShadowMmu::kStaticBit) != 0);
    }
    CHECK(r.mmu.entry(0x100000 + 16 * kPage) == 0);
    CHECK(r.mmu.walk(0, 0x100000) != 0);
    CHECK(r.mmu.fault(0, 0x100000, Access::Write) == FaultResult::NoMemslot);
    CHECK(r.mmu.audit().empty());
    CHECK(r.mmu.rmap().links() == 0);
    r.mmu.map_static(0x200000, kPage, 0x200, false);
    CHECK_FALSE(X86PteFormat::writable(r.mmu.entry(0x200000)));
}

TEST_CASE("static range: overlaps and bad ranges are refused with a clear error") {
    StaticRig r;
    r.host.map_anonymous({kHost, kHost + 64 * kPage}, true);
    r.mmu.add_memslot({1, kWorkload, 64 * kPage, kHost, true});
    r.mmu.map_static(0x100000, 16 * kPage, 0x100, true);
    CHECK_THROWS_WITH_AS(r.mmu.map_static(0x10f000, 2 * kPage, 0x300, true),
                         doctest::Contains("overlaps the static range"), MemslotError);
    CHECK_THROWS_WITH_AS(r.mmu.map_static(kWorkload + 8 * kPage, kPage, 0x300, true),
                         doctest::Contains("overlaps memslot 1"), MemslotError);
    CHECK_THROWS_WITH_AS(r.mmu.add_memslot({2, 0xff000, 2 * kPage, kHost, true}),
                         doctest::Contains("overlaps the static range"), MemslotError);
    CHECK_THROWS_WITH_AS(r.mmu.alias_memslot(1, 3, 0xf8000), doctest::Contains("overlaps the static range"),
                         MemslotError);
    CHECK_THROWS_AS(r.mmu.map_static(0x300001, kPage, 0x300, true), MemslotError);
    CHECK_THROWS_AS(r.mmu.map_static(0x300000, 0, 0x300, true), MemslotError);
    CHECK_THROWS_WITH_AS(r.mmu.map_static(0x300000, 4 * kPage, kFrames - 2, true),
                         doctest::Contains("outside the frame space"), MemslotError);
    CHECK_THROWS_WITH_AS(r.mmu.map_static(0x300000, 4 * kPage, kFirstAllocatable - 2, true),
                         doctest::Contains("overlap the allocatable frames"), MemslotError);
    CHECK(r.mmu.memslots().size() == 1);
    CHECK(r.mmu.audit().empty());
}

TEST_CASE("static range: zaps and host operations leave it alone") {
    StaticRig r;
    r.host.map_anonymous({kHost, kHost + 64 * kPage}, true);
    r.mmu.add_memslot({1, kWorkload, 64 * kPage, kHost, true});
    r.mmu.map_static(0x100000, 8 * kPage, 0x100, true);
    for (std::uint64_t i = 0; i < 64; ++i) REQUIRE(r.mmu.fault(0, kWorkload + i * kPage, Access::Write) == FaultResult::Installed);
    r.host.migrate(kHost);
    r.host.unmap({kHost, kHost + 64 * kPage});
    CHECK(r.mmu.zap_guest_range(0, MemslotTable::kAddressLimit) == 0); // the workload is gone already
    for (std::uint64_t i = 0; i < 8; ++i) CHECK(X86PteFormat::pfn(r.mmu.entry(0x100000 + i * kPage)) == 0x100 + i);
    r.mmu.remove_memslot(1);
    CHECK(r.mmu.entry(0x100000) != 0);
    CHECK(r.mmu.audit().empty());
}

TEST_CASE("static range: frames exhausted while mapping leaves nothing mapped") {
    // Four allocatable frames: the two roots, a PDPT and a PD; none is left
    // for the leaf tables of a 4 MiB range.
    StaticRig r(kFirstAllocatable + 4);
    CHECK_THROWS_WITH_AS(r.mmu.map_static(0, kFirstAllocatable * kPage, 0, true), doctest::Contains("no frame left"),
                         MemslotError);
    CHECK(r.mmu.entry(0) == 0);
    CHECK(r.mmu.audit().empty());
    // The range was not recorded: a memslot may take the space.
    r.host.map_anonymous({kHost, kHost + kPage}, true);
    CHECK_NOTHROW(r.mmu.add_memslot({1, 0, kPage, kHost, true}));
    CHECK(r.mmu.memslots().size() == 1);
}

namespace {

// The 8 bytes of the leaf entry for `ga`, found by walking the four levels
// the way the CPU does (the test plays whatever wrote into a table).
std::uint64_t* leaf_entry_bytes(StaticRig& r, std::uint64_t ga) {
    Pfn table = r.mmu.root();
    for (int level = 4; level >= 1; --level) {
        auto* entries = reinterpret_cast<std::uint64_t*>(r.frames.bytes(table).data());
        std::uint64_t* e = &entries[(ga >> (12 + 9 * (level - 1))) & 511];
        if (level == 1) return e;
        REQUIRE(X86PteFormat::present(*e));
        table = X86PteFormat::pfn(*e);
    }
    return nullptr;
}

bool any_contains(const std::vector<std::string>& lines, const std::string& needle) {
    for (const auto& l : lines)
        if (l.find(needle) != std::string::npos) return true;
    return false;
}

} // namespace

TEST_CASE("static range: audit names a static entry something overwrote, cleared or made read-only") {
    StaticRig r;
    r.mmu.map_static(0x100000, 16 * kPage, 0x100, true);
    r.mmu.map_static(0x200000, 2 * kPage, 0x200, false);
    REQUIRE(r.mmu.audit().empty());

    *leaf_entry_bytes(r, 0x103000) = 0;                                  // cleared
    std::uint64_t* moved = leaf_entry_bytes(r, 0x105000);
    *moved = (*moved & ~0x000ffffffffff000ull) | (Pfn{0x999} << 12);     // another frame
    std::uint64_t* ro = leaf_entry_bytes(r, 0x10f000);
    *ro &= ~std::uint64_t{2};                                            // read-only
    std::uint64_t* rw = leaf_entry_bytes(r, 0x201000);
    *rw |= 2;                                                            // a read-only page made writable

    const std::vector<std::string> problems = r.mmu.audit();
    CHECK(problems.size() == 4);
    CHECK(any_contains(problems, "static entry for 0x103000 is 0x0,"));
    CHECK(any_contains(problems, "static entry for 0x105000 is"));
    CHECK(any_contains(problems, "static entry for 0x10f000 is"));
    CHECK(any_contains(problems, "static entry for 0x201000 is"));
    CHECK(any_contains(problems, "map_static wrote"));
}
