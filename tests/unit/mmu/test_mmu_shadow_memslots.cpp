// ShadowMmu: memslots added while an invalidation is in progress, removed
// (its entries zapped) or refused; aging from the secondary entries; and
// frames running out in the middle of a fault. The rest of the suite is in
// test_mmu_shadow.cpp.
#include "mmu/secondary/shadow_mmu.hpp"
#include "tests/support/shadow_mmu_fixture.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <thread>

using namespace hv::mmu;
using namespace hv::mmu::test::shadow_mmu;

TEST_CASE("adding a memslot waits until no invalidation is in progress") {
    Rig r(cfg());
    r.host.map_anonymous({kHost + 0x1000000, kHost + 0x1100000}, true);
    auto inv = r.host.notifiers().begin({kHost + 0x1000000, kHost + 0x1001000}, InvalidateEvent::Unmap, true);
    REQUIRE(inv);
    std::atomic<bool> added{false};
    std::thread adder([&] {
        r.mmu.add_memslot({2, kGuest + 0x1000000, 0x100000, kHost + 0x1000000, true});
        added = true;
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK_FALSE(added.load());
    inv->end();
    adder.join();
    CHECK(added.load());
    CHECK(r.mmu.fault(0, kGuest + 0x1000000, Access::Read) == FaultResult::Installed);
}

TEST_CASE("removing an unknown memslot is an error that leaves faults working") {
    Rig r(cfg());
    CHECK_THROWS_AS(r.mmu.remove_memslot(42), MemslotError);
    CHECK(r.mmu.fault(0, kGuest, Access::Write) == FaultResult::Installed);
}

TEST_CASE("aging: clear_young and test_young answer from the secondary entries") {
    Rig r(cfg());
    REQUIRE(r.mmu.fault(0, kGuest, Access::Read) == FaultResult::Installed);
    CHECK(r.mmu.test_young({kHost, kHost + kPage}));
    CHECK(r.mmu.clear_young({kHost, kHost + kPage}));
    CHECK_FALSE(r.mmu.test_young({kHost, kHost + kPage}));
    CHECK(r.mmu.entry(kGuest) != 0); // aging does not zap
    CHECK(r.host.age({kHost, kHost + kPage})); // the host A bit from the host fault
    CHECK_FALSE(r.host.age({kHost, kHost + kPage}));
}

TEST_CASE("frames exhausted in the middle of a fault: an error, nothing leaked, audit clean") {
    FrameSpace frames(24);
    {
        HostAddressSpace host(frames);
        ShadowMmu mmu(host, cfg());
        host.map_anonymous({kHost, kHost + 64 * kPage}, true);
        mmu.add_memslot({1, kGuest, 64 * kPage, kHost, true});
        FaultResult last = FaultResult::Installed;
        int installed = 0;
        for (int i = 0; i < 64 && last == FaultResult::Installed; ++i) {
            last = mmu.fault(0, kGuest + i * kPage, Access::Write);
            if (last == FaultResult::Installed) ++installed;
        }
        CHECK(last == FaultResult::OutOfFrames);
        CHECK(installed > 0);
        CHECK(mmu.audit().empty());
        CHECK(mmu.rmap().links() == static_cast<std::uint64_t>(installed));
    }
    CHECK(frames.counters().in_use == 0);
}

TEST_CASE("memslot removal zaps its entries, then bad memslots are refused") {
    Rig r(cfg());
    REQUIRE(r.mmu.fault(0, kGuest, Access::Write) == FaultResult::Installed);
    CHECK_THROWS_AS(r.mmu.add_memslot({2, kGuest + kPage, kPage, kHost, true}), MemslotError);
    CHECK_THROWS_AS(r.mmu.add_memslot({2, 0x123, kPage, kHost, true}), MemslotError);
    r.mmu.remove_memslot(1);
    CHECK(r.mmu.entry(kGuest) == 0);
    CHECK(r.mmu.fault(0, kGuest, Access::Read) == FaultResult::NoMemslot);
    CHECK(r.mmu.audit().empty());
}
