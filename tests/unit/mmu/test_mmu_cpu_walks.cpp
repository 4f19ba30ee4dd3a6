// ShadowConfig::cpu_walks: the tables a KVM guest's CPU walks are built so
// the CPU never has to write an entry (accessed, and dirty when writable,
// from the start), and aging leaves those bits alone.
#include "mmu/secondary/shadow_mmu.hpp"
#include "mmu/base/units.hpp"
#include "mmu/soft/mmu_stack.hpp"
#include "tests/support/shadow_rig.hpp"

#include <doctest/doctest.h>

using namespace hv::mmu;
using hv::mmu::test::ShadowRig;

namespace {
constexpr std::uint64_t kHost = MmuStack::kHost;
constexpr std::uint64_t kGuest = 0x4000000000;
using Pte = X86PteFormat;

// 16 writable pages then 16 read-only ones, in one memslot; no shootdown target.
struct Rig : ShadowRig {
    explicit Rig(bool cpu_walks) : ShadowRig(1024, [&] {
        ShadowConfig c;
        c.cpu_walks = cpu_walks;
        return c;
    }(), kGuest, 32, false) {
        map(16, true);
        map(16, false, 16);
    }
};

} // namespace

TEST_CASE("cpu_walks: writable entries start dirty, read-only ones do not, all start accessed") {
    for (bool walks : {false, true}) {
        CAPTURE(walks);
        Rig r(walks);
        REQUIRE(r.mmu.fault(0, kGuest, Access::Write) == FaultResult::Installed);
        REQUIRE(r.mmu.fault(0, kGuest + 16 * kPage, Access::Read) == FaultResult::Installed);
        const std::uint64_t rw = r.mmu.entry(kGuest), ro = r.mmu.entry(kGuest + 16 * kPage);
        CHECK(Pte::writable(rw));
        CHECK_FALSE(Pte::writable(ro));
        CHECK(Pte::accessed(rw));
        CHECK(Pte::accessed(ro));
        CHECK(Pte::dirty(rw) == walks);
        CHECK_FALSE(Pte::dirty(ro));
        CHECK(r.mmu.audit().empty());
    }
}

TEST_CASE("cpu_walks: aging reports mapped pages young and leaves their entries alone") {
    Rig r(true);
    REQUIRE(r.mmu.fault(0, kGuest, Access::Write) == FaultResult::Installed);
    const std::uint64_t before = r.mmu.entry(kGuest);
    CHECK(r.mmu.clear_young({kHost, kHost + kPage}));
    CHECK(r.mmu.clear_young({kHost, kHost + kPage})); // still young: the bit is never cleared
    CHECK(r.mmu.entry(kGuest) == before);
    CHECK(r.mmu.zap_counters().zaps == 0);
    CHECK_FALSE(r.mmu.clear_young({kHost + kPage, kHost + 2 * kPage})); // nothing mapped there
    CHECK(r.mmu.audit().empty());
}

TEST_CASE("cpu_walks off: aging clears the accessed bit and keeps the entry") {
    Rig r(false);
    REQUIRE(r.mmu.fault(0, kGuest, Access::Write) == FaultResult::Installed);
    CHECK(r.mmu.clear_young({kHost, kHost + kPage}));
    const std::uint64_t e = r.mmu.entry(kGuest);
    CHECK(Pte::present(e));
    CHECK_FALSE(Pte::accessed(e));
    CHECK(r.mmu.zap_counters().zaps == 0);
}
