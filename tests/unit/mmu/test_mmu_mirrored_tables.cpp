// FrameSpace::Mirror and the two pools of KVM shadow mode: the MMU's tables
// live in VMM memory and guest RAM only mirrors them, so a guest that writes
// the mirror (it can, through page tables of its own) changes its own
// translations and nothing the MMU reads.
#include "mmu/secondary/shadow_mmu.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <stdexcept>
#include <sys/mman.h>

using namespace hv::mmu;

namespace {

constexpr std::uint64_t kHost = 0x7f0000000000;
constexpr std::uint64_t kGuest = 0x4000000000;
constexpr Pfn kFrames = 1024, kTablesBegin = 16, kTablesEnd = 512;
using Pte = X86PteFormat;

// Guest RAM: page aligned, as KVM's is.
struct Ram {
    std::uint8_t* p = static_cast<std::uint8_t*>(
        ::mmap(nullptr, kFrames * kPage, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    Ram() { REQUIRE(p != MAP_FAILED); }
    ~Ram() { ::munmap(p, kFrames * kPage); }
    std::span<std::uint8_t> span() const { return {p, kFrames * kPage}; }
    std::uint64_t word(std::uint64_t gpa) const {
        std::uint64_t v;
        std::memcpy(&v, p + gpa, sizeof v);
        return v;
    }
};

struct Rig {
    Ram ram;
    FrameSpace tables{FrameSpace::Mirror{ram.span()}, kTablesBegin, kTablesEnd};
    FrameSpace data{ram.span(), kTablesEnd, kFrames};
    HostAddressSpace host{tables, data};
    ShadowMmu mmu{host, [] {
                      ShadowConfig c;
                      c.cpu_walks = true;
                      return c;
                  }()};
    Rig() {
        host.map_anonymous({kHost, kHost + 64 * kPage}, true);
        mmu.add_memslot({1, kGuest, 64 * kPage, kHost, true});
    }
    // What a CPU walking the mirror in guest RAM from CR3 = the root finds
    // for `va`: the leaf entry, or 0 when a level is not present or leaves RAM.
    std::uint64_t cpu_walk(std::uint64_t va) const {
        std::uint64_t table = mmu.root() * kPage;
        for (int level = 4; level >= 1; --level) {
            const std::uint64_t e = ram.word(table + ((va >> (12 + 9 * (level - 1))) & 511) * 8);
            if (level == 1 || !Pte::present(e)) return e;
            table = Pte::pfn(e) * kPage;
            if (table >= kFrames * kPage) return 0;
        }
        return 0;
    }
};

} // namespace

TEST_CASE("FrameSpace::Mirror: frames live apart from the memory they mirror, which is zeroed on allocation") {
    Ram ram;
    std::memset(ram.p, 0xa5, kFrames * kPage);
    FrameSpace fs(FrameSpace::Mirror{ram.span()}, 4, 8);
    CHECK(fs.mirrored());
    const auto pfn = fs.allocate();
    REQUIRE(pfn);
    CHECK(ram.word(*pfn * kPage) == 0);
    CHECK(ram.word(*pfn * kPage + kPage - 8) == 0);
    std::uint64_t* e = fs.entries(*pfn);
    CHECK((reinterpret_cast<std::uint8_t*>(e) < ram.p || reinterpret_cast<std::uint8_t*>(e) >= ram.p + kFrames * kPage));
    e[3] = 0x1234007;
    CHECK(ram.word(*pfn * kPage + 24) == 0); // not mirrored until asked
    fs.mirror(&e[3]);
    CHECK(ram.word(*pfn * kPage + 24) == 0x1234007);
    std::memset(ram.p + *pfn * kPage, 0xff, kPage); // the guest scribbles on the mirror
    CHECK(e[3] == 0x1234007);
    CHECK(e[4] == 0);
    CHECK_THROWS_AS(FrameSpace(FrameSpace::Mirror{ram.span()}, 8, 4), std::invalid_argument);
    CHECK_THROWS_AS(FrameSpace(FrameSpace::Mirror{ram.span().subspan(1)}, 0, 4), std::invalid_argument);
}

TEST_CASE("HostAddressSpace: table and data pools must share memory and not overlap") {
    Ram ram, other;
    FrameSpace tables(FrameSpace::Mirror{ram.span()}, kTablesBegin, kTablesEnd);
    FrameSpace overlapping(ram.span(), kTablesEnd - 1, kFrames);
    FrameSpace elsewhere(other.span(), kTablesEnd, kFrames);
    CHECK_THROWS_AS(HostAddressSpace(tables, overlapping), std::invalid_argument);
    CHECK_THROWS_AS(HostAddressSpace(tables, elsewhere), std::invalid_argument);
}

TEST_CASE("mirrored tables: the guest CPU walks what the MMU holds, faults and zaps alike") {
    Rig r;
    for (std::uint64_t p = 0; p < 64; p += 3)
        REQUIRE(r.mmu.fault(0, kGuest + p * kPage, p % 2 ? Access::Read : Access::Write) == FaultResult::Installed);
    for (std::uint64_t p = 0; p < 64; ++p) {
        CAPTURE(p);
        const std::uint64_t held = r.mmu.entry(kGuest + p * kPage);
        CHECK(r.cpu_walk(kGuest + p * kPage) == held);
        CHECK(Pte::present(held) == (p % 3 == 0));
        if (Pte::present(held)) {
            CHECK(Pte::pfn(held) >= kTablesEnd); // data pages come from the data pool
            CHECK(Pte::accessed(held));          // the CPU need not write the entry
        }
    }
    r.host.unmap({kHost, kHost + 32 * kPage});
    for (std::uint64_t p = 0; p < 32; p += 3) CHECK(r.cpu_walk(kGuest + p * kPage) == 0);
    CHECK(Pte::present(r.cpu_walk(kGuest + 33 * kPage)));
    CHECK(r.mmu.audit().empty());
}

TEST_CASE("mirrored tables: a guest that overwrites every table frame changes nothing the MMU reads") {
    for (int pattern = 0; pattern < 3; ++pattern) {
        CAPTURE(pattern);
        Rig r;
        for (std::uint64_t p = 0; p < 64; p += 2)
            REQUIRE(r.mmu.fault(0, kGuest + p * kPage, Access::Write) == FaultResult::Installed);
        std::uint64_t before[64];
        for (std::uint64_t p = 0; p < 64; ++p) before[p] = r.mmu.entry(kGuest + p * kPage);
        // All ones, zeros, or every entry pointing at its own frame.
        for (Pfn f = kTablesBegin; f < kTablesEnd; ++f)
            for (std::uint64_t i = 0; i < 512; ++i) {
                const std::uint64_t v = pattern == 0 ? ~0ull : pattern == 1 ? 0 : (f * kPage) | 0x27;
                std::memcpy(r.ram.p + f * kPage + i * 8, &v, 8);
            }
        for (std::uint64_t p = 0; p < 64; ++p) CHECK(r.mmu.entry(kGuest + p * kPage) == before[p]);
        CHECK(r.mmu.audit().empty());
        // The MMU goes on working from its own copy: faults, a migrate, an unmap.
        REQUIRE(r.mmu.fault(0, kGuest + kPage, Access::Write) == FaultResult::Installed);
        CHECK(r.host.migrate(kHost + 2 * kPage));
        CHECK_FALSE(Pte::present(r.mmu.entry(kGuest + 2 * kPage)));
        CHECK(r.host.unmap({kHost, kHost + 64 * kPage}) > 0);
        for (std::uint64_t p = 0; p < 64; ++p) CHECK_FALSE(Pte::present(r.mmu.entry(kGuest + p * kPage)));
        CHECK(r.mmu.audit().empty());
    }
}
