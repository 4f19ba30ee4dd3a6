// Software vCPUs: TLBs, the shootdown protocol (including idle vCPUs), runs
// with each kind of host churn under every lock and coherence policy, 1024
// vCPUs, and a deliberately broken shootdown that the checker must catch.
#include "mmu/soft/soft_vcpu.hpp"
#include "tests/support/soft_run.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <string>
#include <thread>

using namespace hv::mmu;
using hv::mmu::test::describe;
using hv::mmu::test::small;

namespace {


void all_churn(SoftRunConfig& c, double rate) {
    for (double& r : c.churn_rate) r = rate;
}

struct DroppingShootdown final : TlbShootdown {
    std::atomic<int> dropped{0};
    void shootdown(const VcpuMask&, std::span<const std::uint64_t>) override { ++dropped; }
};

} // namespace

TEST_CASE("soft vcpus: a run without churn faults each page once and loses nothing") {
    SoftRunConfig c = small(2, 32, 2000);
    c.pattern = AccessPattern::Sequential;
    SoftRig rig(c, {});
    const SoftRunResult r = rig.run(c);
    INFO(describe(r));
    CHECK(r.ok());
    CHECK(r.vcpu.accesses == 4000);
    CHECK(r.vcpu.reads + r.vcpu.writes == 4000);
    CHECK(r.vcpu.tlb_hits + r.vcpu.tlb_misses == 4000);
    CHECK(r.mmu.faults == 64); // every page of both slices once: the TLB holds them all
    CHECK(r.mmu.installs == 64);
    CHECK(r.vcpu.faults == 64);
    CHECK(r.mmu.retries == 0);
    CHECK(r.mmu.zaps == 0);
    CHECK(r.shootdown.shootdowns == 0);
    CHECK(r.vcpu.tlb_misses == 64); // the only misses are the first touches
    CHECK(r.vcpu.writes > 0);
}

TEST_CASE("soft vcpus: a small TLB misses and refills from the secondary table without faulting") {
    SoftRunConfig c = small(1, 64, 3000);
    c.tlb = {4, 1}; // direct mapped, 4 entries
    SoftRig rig(c, {});
    const SoftRunResult r = rig.run(c);
    INFO(describe(r));
    CHECK(r.ok());
    CHECK(r.mmu.faults == 64);
    CHECK(r.vcpu.walk_fills > 0);
    CHECK(r.vcpu.tlb_misses > 64);
}

TEST_CASE("soft shootdown: idle vCPUs get a request they honour on entry, a vCPU in access acknowledges") {
    SoftRunConfig c = small(3, 8, 1);
    c.sharing = Sharing::Shared;
    SoftRig rig(c, {});
    SoftVcpuSystem& sys = rig.system;
    sys.set_ack_wait(std::chrono::microseconds(0)); // wait for every ack, however slow the machine
    const std::uint64_t ga = SoftRig::kGuestBase;
    REQUIRE(sys.access_once(0, 0, hv::mmu::Access::Write));
    REQUIRE(sys.access_once(1, 0, hv::mmu::Access::Read));
    REQUIRE(sys.access_once(2, 0, hv::mmu::Access::Read));
    CHECK(sys.tlb_contains(1, ga));

    // vCPU 0 runs (in access, polling its boundary); 1 and 2 are idle.
    std::atomic<bool> stop{false}, entered{false};
    std::thread runner([&] {
        sys.enter(0);
        entered = true;
        while (!stop) sys.boundary(0);
        sys.leave(0);
    });
    while (!entered) std::this_thread::yield();
    VcpuMask targets;
    targets.set(0);
    targets.set(1);
    targets.set(2);
    const std::uint64_t pages[] = {ga};
    for (int i = 0; i < 20; ++i) sys.shootdown(targets, pages); // must not deadlock on the idle ones
    const auto sd = sys.shootdown_counters();
    CHECK(sd.shootdowns == 20);
    CHECK(sd.targets == 60);
    CHECK(sd.requests == 20);
    CHECK(sd.acks == 20);
    CHECK(sd.idle_requests == 40);
    CHECK_FALSE(sys.tlb_contains(1, ga));
    CHECK_FALSE(sys.tlb_contains(2, ga));
    stop = true;
    runner.join();
    CHECK_FALSE(sys.tlb_contains(0, ga));
    CHECK(sys.vcpu_counters(0).flushes_honoured >= 1);

    // A flush of more than kFlushAllThreshold pages empties the whole TLB.
    REQUIRE(sys.access_once(1, 3, hv::mmu::Access::Read));
    std::vector<std::uint64_t> many(SoftVcpuSystem::kFlushAllThreshold + 1, ga + 100 * kPage);
    sys.shootdown(targets, many);
    CHECK_FALSE(sys.tlb_contains(1, ga + 3 * kPage));
}

TEST_CASE("soft shootdown: a vCPU that does not answer in time gets the request at its next boundary") {
    SoftRunConfig c = small(2, 8, 1);
    c.sharing = Sharing::Shared;
    SoftRig rig(c, {});
    SoftVcpuSystem& sys = rig.system;
    sys.set_ack_wait(std::chrono::microseconds(1000));
    const std::uint64_t ga = SoftRig::kGuestBase;
    REQUIRE(sys.access_once(1, 0, hv::mmu::Access::Read));
    REQUIRE(sys.tlb_contains(1, ga));
    // vCPU 1 is in access but never reaches a boundary (its thread is "preempted").
    sys.enter(1);
    VcpuMask targets;
    targets.set(1);
    const std::uint64_t pages[] = {ga};
    const auto t0 = std::chrono::steady_clock::now();
    sys.shootdown(targets, pages); // returns after the ack wait instead of hanging
    CHECK(std::chrono::steady_clock::now() - t0 >= std::chrono::microseconds(1000));
    auto sd = sys.shootdown_counters();
    CHECK(sd.requests == 1);
    CHECK(sd.acks == 0);
    CHECK(sd.deferred == 1);
    CHECK(sys.vcpu_counters(1).flushes_honoured == 0);
    sys.boundary(1); // the vCPU runs again: it honours the request first
    CHECK_FALSE(sys.tlb_contains(1, ga));
    CHECK(sys.vcpu_counters(1).flushes_honoured == 1);
    sys.leave(1);
}

TEST_CASE("soft vcpus: a host migrate is seen through refault, with the same contents") {
    SoftRunConfig c = small(1, 4, 1);
    SoftRig rig(c, {});
    REQUIRE(rig.system.access_once(0, 1, hv::mmu::Access::Write));
    const std::uint64_t before = rig.mmu.entry(SoftRig::kGuestBase + kPage);
    REQUIRE(rig.host.migrate(SoftRig::kHostBase + kPage));
    CHECK_FALSE(rig.system.tlb_contains(0, SoftRig::kGuestBase + kPage)); // flushed directly (idle)
    REQUIRE(rig.system.access_once(0, 1, hv::mmu::Access::Read));
    const std::uint64_t after = rig.mmu.entry(SoftRig::kGuestBase + kPage);
    CHECK(X86PteFormat::pfn(after) != X86PteFormat::pfn(before));
    const auto counters = rig.system.vcpu_counters(0);
    CHECK(counters.lost_writes == 0);
    CHECK(counters.violations == 0);
    CHECK(counters.faults == 2);
}

TEST_CASE("soft vcpus: each churn operation alone, 8 vCPUs, loses no writes (both TLB models)") {
    for (std::size_t op = 0; op < kChurnOps; ++op) {
        for (Sharing sharing : {Sharing::Disjoint, Sharing::Shared})
        for (TlbModel model : {TlbModel::Recheck, TlbModel::Hardware}) {
            const std::string name = std::string(to_string(static_cast<ChurnOp>(op))) + "/" + to_string(sharing) +
                                     "/" + to_string(model);
            CAPTURE(name);
            SoftRunConfig c = small(8, 24, 600);
            c.sharing = sharing;
            c.tlb.model = model;
            c.churn_rate[op] = 5000;
            c.min_churn_ops = 20;
            SoftRig rig(c, {});
            const SoftRunResult r = rig.run(c);
            INFO(describe(r));
            CHECK(r.ok());
            CHECK(r.vcpu.accesses >= 8 * 600);
            CHECK(r.churn.attempted[op] >= 20);
        }
    }
}

TEST_CASE("soft vcpus: all churn together under every lock and coherence policy (both TLB models)") {
    for (LockPolicy lock : {LockPolicy::Global, LockPolicy::Rw, LockPolicy::Split})
        for (CoherencePolicy coh : {CoherencePolicy::Seq, CoherencePolicy::PtLock, CoherencePolicy::RangeActive})
        for (TlbModel model : {TlbModel::Recheck, TlbModel::Hardware}) {
            const std::string policy = std::string(to_string(lock)) + "/" + to_string(coh) + "/" + to_string(model);
            CAPTURE(policy);
            SoftRunConfig c = small(8, 24, 500);
            c.tlb.model = model;
            c.sharing = coh == CoherencePolicy::PtLock ? Sharing::Shared : Sharing::Disjoint;
            all_churn(c, 10000);
            c.min_churn_ops = 10;
            ShadowConfig p;
            p.lock = lock;
            p.coherence = coh;
            p.batch = lock == LockPolicy::Split ? 1 : 64;
            SoftRig rig(c, p);
            const SoftRunResult r = rig.run(c);
            INFO(describe(r));
            CHECK(r.ok());
            std::uint64_t attempted = 0;
            for (auto a : r.churn.attempted) attempted += a;
            CHECK(attempted >= 60);
        }
}

TEST_CASE("soft vcpus: 1024 vCPUs with all churn for 3 seconds lose no writes") {
    // Shared: every vCPU over one region (vCPUs 512.. only read: no stamp
    // slot is left for them), so every zap targets many vCPUs at once.
    SoftRunConfig c = small(1024, 128, 0);
    c.seconds = 3;
    c.sharing = Sharing::Shared;
    all_churn(c, 2000);
    c.min_churn_ops = 1; // however loaded the machine is
    SoftRig rig(c, {});
    const SoftRunResult r = rig.run(c);
    INFO(describe(r));
    CHECK(r.ok());
    CHECK(r.seconds >= 3);
    CHECK(r.vcpu.accesses >= 1024);
    for (std::size_t op = 0; op < kChurnOps; ++op) CHECK(r.churn.attempted[op] >= 1);
    CHECK(r.vcpu.faults >= 128);
    // TLB refills register the vCPU with the leaf table (ShadowMmu::walk),
    // so zaps target readers that never faulted themselves.
    CHECK(r.mmu.walk_registrations > 0);
    CHECK(r.shootdown.targets > r.shootdown.shootdowns);
}

TEST_CASE("soft vcpus: 64 vCPUs with all churn for 1 second lose no writes in the hardware TLB model") {
    // Every shootdown waits for each target in access: the model's cost.
    SoftRunConfig c = small(64, 64, 0);
    c.seconds = 1;
    c.sharing = Sharing::Shared;
    c.tlb.model = TlbModel::Hardware;
    all_churn(c, 2000);
    c.min_churn_ops = 1;
    SoftRig rig(c, {});
    const SoftRunResult r = rig.run(c);
    INFO(describe(r));
    CHECK(r.ok());
    for (std::size_t op = 0; op < kChurnOps; ++op) CHECK(r.churn.attempted[op] >= 1);
    CHECK(r.shootdown.deferred == 0); // nothing is left pending: every wait ends in an ack or a leave
    CHECK(r.vcpu.stale_dropped == 0);  // nothing looks at the host PTE
}

TEST_CASE("soft vcpus: the checker catches a shootdown that is dropped (both TLB models)") {
    // Without shootdowns the vCPUs keep stale TLB entries across migrations:
    // the run must report it, or "zero lost writes" elsewhere proves nothing.
    for (TlbModel model : {TlbModel::Recheck, TlbModel::Hardware}) {
        CAPTURE(to_string(model));
        SoftRunConfig c = small(2, 8, 4000);
        c.tlb.model = model;
        c.churn_rate[static_cast<std::size_t>(ChurnOp::Migrate)] = 20000;
        c.min_churn_ops = 50;
        DroppingShootdown broken;
        SoftRig rig(c, {}, 0, &broken);
        const SoftRunResult r = rig.run(c);
        INFO(describe(r));
        CHECK(broken.dropped > 0);
        CHECK(r.churn.done[static_cast<std::size_t>(ChurnOp::Migrate)] > 0);
        // Caught during the run (a stale read or write) or, when the scheduler
        // let no vCPU use a stale entry before the end, by the final TLB audit.
        CHECK(r.violations + r.lost_writes + r.audit.size() > 0);
        CHECK_FALSE(r.ok());
        if (model == TlbModel::Hardware) CHECK(r.violations == 0); // only the re-check counts those
    }
}

// One stale store, step by step: vCPU 0 writes page 2, the host migrates it
// and the flush never comes, vCPU 0 writes again through its TLB.
TEST_CASE("soft vcpus: a store through a stale entry is a violation (recheck) or a lost write (hardware)") {
    for (TlbModel model : {TlbModel::Recheck, TlbModel::Hardware}) {
        CAPTURE(to_string(model));
        SoftRunConfig c = small(1, 8, 1);
        c.sharing = Sharing::Shared;
        c.tlb.model = model;
        DroppingShootdown broken;
        SoftRig rig(c, {}, 0, &broken);
        REQUIRE(rig.system.access_once(0, 2, Access::Write));
        REQUIRE(rig.host.migrate(SoftRig::kHostBase + 2 * kPage));
        CHECK(broken.dropped == 1);
        REQUIRE(rig.system.access_once(0, 2, Access::Write));
        const SoftVcpuCounters v = rig.system.vcpu_counters(0);
        if (model == TlbModel::Recheck) {
            CHECK(v.violations == 1);
            CHECK(rig.system.verify_stamps(1) == 0); // the re-check sent the store to the new frame
        } else {
            CHECK(v.violations == 0);
            CHECK(v.tlb_hits == 1);                  // the second store used the stale entry
            CHECK(rig.system.verify_stamps(1) == 1); // and went to the old frame: lost
        }
    }
}

TEST_CASE("soft vcpus: the TLB audit finds a zapped translation no flush reached") {
    for (bool drop : {false, true}) {
        CAPTURE(drop);
        SoftRunConfig c = small(2, 8, 1);
        c.sharing = Sharing::Shared;
        DroppingShootdown broken;
        SoftRig rig(c, {}, 0, drop ? &broken : nullptr);
        REQUIRE(rig.system.access_once(0, 2, hv::mmu::Access::Write));
        REQUIRE(rig.system.access_once(1, 2, hv::mmu::Access::Read));
        CHECK(rig.system.audit_tlbs(2).empty());
        rig.mmu.zap_guest_range(SoftRig::kGuestBase, SoftRig::kGuestBase + 8 * kPage);
        const auto problems = rig.system.audit_tlbs(2);
        if (drop) {
            CHECK(broken.dropped == 1);
            CHECK(problems.size() == 2); // both vCPUs still hold page 2
        } else {
            CHECK(problems.empty());
        }
    }
}

// Pages 2 and 3 are in the region's first leaf table, page 520 in its second.
TEST_CASE("soft vcpus: a vCPU whose TLB lost its last entry of a leaf table leaves its shootdown mask") {
    SoftRunConfig c = small(2, 600, 1);
    c.sharing = Sharing::Shared;
    SoftRig rig(c, {});
    const auto zap_first_table = [&] { rig.mmu.zap_guest_range(SoftRig::kGuestBase, SoftRig::kGuestBase + 512 * kPage); };
    REQUIRE(rig.system.access_once(0, 2, Access::Write)); // vCPU 0 joins the first table
    zap_first_table();                                    // a request for it (idle: not waited for)
    CHECK(rig.system.shootdown_counters().targets == 1);
    CHECK(rig.mmu.counters().mask_departures == 0);
    // Entering honours the request (the entry for page 2 goes); the access
    // boundary then finds no entry of the first table left.
    REQUIRE(rig.system.access_once(0, 520, Access::Read));
    CHECK(rig.mmu.counters().mask_departures == 1);
    REQUIRE(rig.system.access_once(1, 3, Access::Write)); // vCPU 1 joins the first table
    zap_first_table();
    CHECK(rig.system.shootdown_counters().targets == 2); // vCPU 1 only
    // vCPU 0 walks there again: it joins again before it reads the entry.
    REQUIRE(rig.system.access_once(1, 3, Access::Write));
    const std::uint64_t walks_before = rig.mmu.counters().walk_registrations;
    REQUIRE(rig.system.access_once(0, 3, Access::Read));
    CHECK(rig.mmu.counters().walk_registrations == walks_before + 1);
    zap_first_table();
    CHECK(rig.system.shootdown_counters().targets == 4); // both
    CHECK(rig.system.audit_tlbs(2).empty());
    CHECK(rig.system.verify_stamps(2) == 0);
}

TEST_CASE("soft vcpus: bad configurations are refused") {
    SoftFrames frames(128, 64);
    HostAddressSpace host(frames.tables, frames.data);
    CHECK_THROWS(SoftFrames(128, 0));
    CHECK_THROWS(SoftFrames(128, 128));
    CHECK_THROWS_AS(SoftVcpuSystem(host, 0), std::invalid_argument);
    CHECK_THROWS_AS(SoftVcpuSystem(host, kMaxVcpus + 1), std::invalid_argument);
    SoftRunConfig c = small(2, 8, 10);
    SoftRig rig(c, {});
    SoftRunConfig too_big = c;
    too_big.pages = 9;
    CHECK_THROWS_AS(rig.run(too_big), std::invalid_argument);
    SoftRunConfig too_many = c;
    too_many.vcpus = 3;
    CHECK_THROWS_AS(rig.run(too_many), std::invalid_argument);
}
