// ShadowMmu: faults through memslots and host tables, zaps driven by host
// operations, batching, shootdown targets, aliasing and the rmap, and forced
// fault/invalidate races under each coherence policy. Memslot changes,
// aging and frame exhaustion are in test_mmu_shadow_memslots.cpp, the
// correctness suite under every policy combination in
// test_mmu_shadow_policy_matrix.cpp.
#include "mmu/secondary/shadow_mmu.hpp"
#include "tests/support/shadow_mmu_fixture.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

using namespace hv::mmu;
using namespace hv::mmu::test::shadow_mmu;

TEST_CASE("shadow fault installs an entry for the host frame, with its rmap link") {
    Rig r(cfg());
    REQUIRE(r.mmu.fault(0, kGuest + 5 * kPage + 7, Access::Write) == FaultResult::Installed);
    const std::uint64_t e = r.mmu.entry(kGuest + 5 * kPage);
    REQUIRE(e != 0);
    const auto host = r.host.lookup(kHost + 5 * kPage);
    REQUIRE(host);
    CHECK(X86PteFormat::pfn(e) == host->pfn);
    CHECK(X86PteFormat::writable(e));
    CHECK(r.mmu.rmap().list(host->pfn) == std::vector<std::uint64_t>{(kGuest >> 12) + 5});
    CHECK(r.mmu.fault(1, kGuest + 5 * kPage, Access::Read) == FaultResult::Installed);
    CHECK(r.mmu.counters().installs == 1);
    CHECK(r.mmu.audit().empty());
}

TEST_CASE("shadow fault: outside memslots, read-only slot, protected host page") {
    Rig r(cfg());
    CHECK(r.mmu.fault(0, kGuest - kPage, Access::Read) == FaultResult::NoMemslot);
    r.host.map_anonymous({kHost + 0x100000000, kHost + 0x100000000 + 4 * kPage}, true);
    r.mmu.add_memslot({2, 0x80000000, 4 * kPage, kHost + 0x100000000, false});
    CHECK(r.mmu.fault(0, 0x80000000, Access::Write) == FaultResult::Refused);
    CHECK(r.mmu.fault(0, 0x80000000, Access::Read) == FaultResult::Installed);
    CHECK_FALSE(X86PteFormat::writable(r.mmu.entry(0x80000000)));
    r.host.protect({kHost, kHost + kPage}, false);
    CHECK(r.mmu.fault(0, kGuest, Access::Write) == FaultResult::Refused);
    CHECK(r.mmu.fault(0, kGuest, Access::Read) == FaultResult::Installed);
    CHECK(r.mmu.counters().no_memslot == 1);
    CHECK(r.mmu.audit().empty());
}

TEST_CASE("host unmap zaps the entries and shoots down exactly the vCPUs that installed them") {
    Rig r(cfg(LockPolicy::Rw, CoherencePolicy::Seq, 512, 8));
    REQUIRE(r.mmu.fault(3, kGuest, Access::Write) == FaultResult::Installed);
    REQUIRE(r.mmu.fault(5, kGuest + kPage, Access::Write) == FaultResult::Installed);
    // vCPU 6 faults in another leaf table (2 MiB away): not a target.
    REQUIRE(r.mmu.fault(6, kGuest + 512 * kPage, Access::Write) == FaultResult::Installed);
    r.host.unmap({kHost, kHost + 2 * kPage});
    CHECK(r.mmu.entry(kGuest) == 0);
    CHECK(r.mmu.entry(kGuest + kPage) == 0);
    CHECK(r.mmu.entry(kGuest + 512 * kPage) != 0);
    REQUIRE(r.sd.targets.size() == 1);
    CHECK(r.sd.targets[0] == std::vector<std::uint32_t>{3, 5});
    CHECK(r.sd.sizes[0] == 2);
    CHECK(r.mmu.audit().empty());
}

TEST_CASE("migrate: the entry is zapped and the refault maps the new frame with the same bytes") {
    Rig r(cfg());
    REQUIRE(r.mmu.fault(0, kGuest, Access::Write) == FaultResult::Installed);
    std::memset(r.guest_bytes(kGuest), 0x3c, kPage);
    const Pfn before = X86PteFormat::pfn(r.mmu.entry(kGuest));
    REQUIRE(r.host.migrate(kHost));
    CHECK(r.mmu.entry(kGuest) == 0);
    REQUIRE(r.mmu.fault(0, kGuest, Access::Read) == FaultResult::Installed);
    CHECK(X86PteFormat::pfn(r.mmu.entry(kGuest)) != before);
    CHECK(r.guest_bytes(kGuest)[4000] == 0x3c);
    CHECK(r.mmu.audit().empty());
}

TEST_CASE("alias: two guest pages map one frame, then the rmap lists both, then zap_frame drops both") {
    Rig r(cfg());
    r.mmu.alias_memslot(1, 2, 0x90000000);
    REQUIRE(r.mmu.fault(0, kGuest + 3 * kPage, Access::Write) == FaultResult::Installed);
    REQUIRE(r.mmu.fault(1, 0x90000000 + 3 * kPage, Access::Write) == FaultResult::Installed);
    const Pfn pfn = X86PteFormat::pfn(r.mmu.entry(kGuest + 3 * kPage));
    CHECK(X86PteFormat::pfn(r.mmu.entry(0x90000000 + 3 * kPage)) == pfn);
    CHECK(r.mmu.rmap().count(pfn) == 2);
    CHECK(r.mmu.zap_frame(pfn) == 2);
    CHECK(r.mmu.entry(kGuest + 3 * kPage) == 0);
    CHECK(r.mmu.entry(0x90000000 + 3 * kPage) == 0);
    CHECK(r.mmu.rmap().count(pfn) == 0);
    CHECK(r.mmu.audit().empty());
}

TEST_CASE("merge: both guest pages end up on the shared frame, read-only, then a guest write breaks it") {
    Rig r(cfg());
    REQUIRE(r.mmu.fault(0, kGuest, Access::Write) == FaultResult::Installed);
    REQUIRE(r.mmu.fault(0, kGuest + kPage, Access::Write) == FaultResult::Installed);
    REQUIRE(r.host.merge(kHost, kHost + kPage)); // both zero-filled: identical
    CHECK(r.mmu.entry(kGuest) == 0);
    CHECK(r.mmu.entry(kGuest + kPage) == 0);
    REQUIRE(r.mmu.fault(0, kGuest, Access::Read) == FaultResult::Installed);
    REQUIRE(r.mmu.fault(0, kGuest + kPage, Access::Read) == FaultResult::Installed);
    CHECK(X86PteFormat::pfn(r.mmu.entry(kGuest)) == X86PteFormat::pfn(r.mmu.entry(kGuest + kPage)));
    CHECK_FALSE(X86PteFormat::writable(r.mmu.entry(kGuest)));
    // The host's copy-on-write break is itself an invalidation of that page,
    // so the first attempt retries (as in KVM); the second installs.
    FaultResult w = r.mmu.fault(0, kGuest + kPage, Access::Write);
    CHECK(w == FaultResult::Retry);
    w = r.mmu.fault(0, kGuest + kPage, Access::Write);
    REQUIRE(w == FaultResult::Installed);
    CHECK(X86PteFormat::pfn(r.mmu.entry(kGuest)) != X86PteFormat::pfn(r.mmu.entry(kGuest + kPage)));
    CHECK(r.mmu.audit().empty());
}

TEST_CASE("zap batching: at most `batch` entries per lock hold, one shootdown per batch") {
    for (LockPolicy lock : {LockPolicy::Global, LockPolicy::Rw, LockPolicy::Split}) {
        for (std::size_t batch : {std::size_t{1}, std::size_t{64}, std::size_t{512}, std::size_t{0}}) {
            const std::string lock_policy = to_string(lock);
            CAPTURE(lock_policy);
            CAPTURE(batch);
            Rig r(cfg(lock, CoherencePolicy::Seq, batch, 1), 1000, 4096);
            for (int i = 0; i < 1000; ++i) REQUIRE(r.mmu.fault(0, kGuest + i * kPage, Access::Write) == FaultResult::Installed);
            const auto before = r.mmu.counters();
            r.host.unmap({kHost, kHost + 1000 * kPage});
            const auto after = r.mmu.counters();
            CHECK(after.zaps - before.zaps == 1000);
            // 1000 pages: leaf tables hold 512 (the memslot starts 2 MiB-aligned).
            std::uint64_t expected;
            if (lock == LockPolicy::Split)
                expected = batch == 0 ? 2 : (512 + batch - 1) / batch + (488 + batch - 1) / batch;
            else
                expected = batch == 0 ? 1 : (1000 + batch - 1) / batch;
            CHECK(after.batches - before.batches == expected);
            CHECK(r.sd.targets.size() == expected);
            for (std::size_t n : r.sd.sizes) CHECK((batch == 0 || n <= batch));
            CHECK(r.mmu.audit().empty());
        }
    }
}

TEST_CASE("zap: a batch that spans two leaf tables shoots down the vCPUs of both, once") {
    for (LockPolicy lock : {LockPolicy::Global, LockPolicy::Rw}) {
        CAPTURE(to_string(lock));
        Rig r(cfg(lock, CoherencePolicy::Seq, 512, 4));
        // vCPU 0 in the first leaf table, vCPU 1 in the second; vCPU 2 only
        // walks the second (a TLB refill), vCPU 3 touches neither.
        REQUIRE(r.mmu.fault(0, kGuest + 510 * kPage, Access::Write) == FaultResult::Installed);
        REQUIRE(r.mmu.fault(0, kGuest + 511 * kPage, Access::Write) == FaultResult::Installed);
        REQUIRE(r.mmu.fault(1, kGuest + 512 * kPage, Access::Write) == FaultResult::Installed);
        REQUIRE(r.mmu.fault(1, kGuest + 513 * kPage, Access::Write) == FaultResult::Installed);
        CHECK(X86PteFormat::present(r.mmu.walk(2, kGuest + 513 * kPage)));
        r.host.unmap({kHost + 510 * kPage, kHost + 514 * kPage});
        REQUIRE(r.sd.targets.size() == 1); // global and rw hold everything: one batch
        CHECK(r.sd.targets[0] == std::vector<std::uint32_t>{0, 1, 2});
        CHECK(r.sd.sizes[0] == 4);
        CHECK(r.mmu.rmap().links() == 0);
        CHECK(r.mmu.audit().empty());
    }
}

TEST_CASE("a fault racing an invalidation never installs the stale frame, under every coherence policy") {
    for (CoherencePolicy coh : {CoherencePolicy::Seq, CoherencePolicy::RangeActive, CoherencePolicy::PtLock}) {
        for (LockPolicy lock : {LockPolicy::Global, LockPolicy::Rw, LockPolicy::Split}) {
            const std::string coherence = to_string(coh);
            CAPTURE(coherence);
            const std::string lock_policy = to_string(lock);
            CAPTURE(lock_policy);
            Rig r(cfg(lock, coh));
            REQUIRE(r.host.fault(kHost, Access::Write).status == HostFaultStatus::Mapped);
            bool fired = false;
            std::thread migrator;
            r.mmu.after_host_lookup = [&](std::uint32_t, std::uint64_t) {
                if (fired) return;
                fired = true;
                if (coh == CoherencePolicy::PtLock) {
                    // The host PT lock is held here: the migration must wait for the install, then zap it.
                    migrator = std::thread([&] { r.host.migrate(kHost); });
                    std::this_thread::sleep_for(std::chrono::milliseconds(20));
                } else {
                    REQUIRE(r.host.migrate(kHost)); // completes between lookup and install
                }
            };
            const FaultResult res = r.mmu.fault(0, kGuest, Access::Read);
            if (migrator.joinable()) migrator.join();
            if (coh == CoherencePolicy::PtLock)
                // The migration's range start runs before it needs the PT lock we
                // hold, so the install sees it in progress and retries; had it
                // not started yet, the install would land and then be zapped.
                CHECK((res == FaultResult::Retry || res == FaultResult::Installed));
            else
                CHECK(res == FaultResult::Retry);
            // Whatever happened, no entry points at a frame the host no longer maps there.
            CHECK(r.mmu.audit().empty());
            r.mmu.after_host_lookup = nullptr;
            REQUIRE(r.mmu.fault(0, kGuest, Access::Read) == FaultResult::Installed);
            CHECK(X86PteFormat::pfn(r.mmu.entry(kGuest)) == r.host.lookup(kHost)->pfn);
        }
    }
}

TEST_CASE("a fault racing a memslot removal never installs an entry for the removed slot, under every policy") {
    for (CoherencePolicy coh : {CoherencePolicy::Seq, CoherencePolicy::RangeActive, CoherencePolicy::PtLock}) {
        for (LockPolicy lock : {LockPolicy::Global, LockPolicy::Rw, LockPolicy::Split}) {
            const std::string policies = std::string(to_string(lock)) + "/" + to_string(coh);
            CAPTURE(policies);
            Rig r(cfg(lock, coh));
            // The fault looked the slot up; the removal completes before the install.
            r.mmu.after_host_lookup = [&](std::uint32_t, std::uint64_t) { r.mmu.remove_memslot(1); };
            CHECK(r.mmu.fault(0, kGuest, Access::Write) == FaultResult::Retry);
            r.mmu.after_host_lookup = nullptr;
            CHECK(r.mmu.entry(kGuest) == 0);
            CHECK(r.mmu.audit().empty());
            CHECK(r.mmu.fault(0, kGuest, Access::Write) == FaultResult::NoMemslot);
        }
    }
}

TEST_CASE("an invalidation in progress refuses installs in its range only, except under range-active") {
    for (CoherencePolicy coh : {CoherencePolicy::Seq, CoherencePolicy::PtLock, CoherencePolicy::RangeActive}) {
        const std::string coherence = to_string(coh);
        CAPTURE(coherence);
        Rig r(cfg(LockPolicy::Rw, coh));
        auto inv = r.host.notifiers().begin({kHost + 8 * kPage, kHost + 16 * kPage}, InvalidateEvent::Unmap, true);
        REQUIRE(inv);
        CHECK(r.mmu.fault(0, kGuest + 9 * kPage, Access::Read) == FaultResult::Retry);
        const FaultResult elsewhere = r.mmu.fault(0, kGuest + 40 * kPage, Access::Read);
        CHECK(elsewhere == (coh == CoherencePolicy::RangeActive ? FaultResult::Retry : FaultResult::Installed));
        inv->end();
        CHECK(r.mmu.fault(0, kGuest + 9 * kPage, Access::Read) == FaultResult::Installed);
        CHECK(r.mmu.audit().empty());
    }
}
