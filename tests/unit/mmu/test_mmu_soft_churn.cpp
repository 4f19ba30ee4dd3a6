// The software vCPUs' own churn (SoftChurn: memslot removal, zero-page
// merges, ranges across zap batch boundaries), the external-TLB device beside
// the shadow MMU, and the time limit that ends a run a broken protocol would
// keep going forever. Runs in both TLB models where the model matters.
#include "mmu/soft/soft_vcpu.hpp"
#include "tests/support/soft_run.hpp"

#include <doctest/doctest.h>

#include <chrono>
#include <string>
#include <vector>

using namespace hv::mmu;
using hv::mmu::test::describe;
using hv::mmu::test::small;

namespace {

constexpr TlbModel kModels[] = {TlbModel::Recheck, TlbModel::Hardware};

double& rate(SoftRunConfig& c, SoftChurnOp op) { return c.soft_churn.rate[static_cast<std::size_t>(op)]; }
std::uint64_t done(const SoftRunResult& r, SoftChurnOp op) { return r.soft_churn.done[static_cast<std::size_t>(op)]; }
std::uint64_t attempted(const SoftRunResult& r, SoftChurnOp op) {
    return r.soft_churn.attempted[static_cast<std::size_t>(op)];
}

double seconds_since(std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

} // namespace

TEST_CASE("soft churn: an access while its memslot is removed is NoMemslot, counted, and its write not expected") {
    for (TlbModel model : kModels) {
        CAPTURE(to_string(model));
        SoftRunConfig c = small(1, 8, 1, model);
        c.sharing = Sharing::Shared;
        c.memslots = 2; // one large and one small: pages 0-6 and 7
        SoftRig rig(c, {});
        const std::vector<Memslot> slots = rig.mmu.memslots();
        REQUIRE(slots.size() == 2);
        CHECK(slots[0].size == 7 * kPage);
        CHECK(slots[1].guest_start == SoftRig::kGuestBase + 7 * kPage);
        REQUIRE(rig.system.access_once(0, 1, Access::Write));
        rig.mmu.remove_memslot(1);
        CHECK_FALSE(rig.system.access_once(0, 1, Access::Write)); // cannot happen: no memslot
        CHECK_FALSE(rig.system.access_once(0, 2, Access::Read));
        CHECK(rig.system.access_once(0, 7, Access::Write)); // the other slot still works
        CHECK(rig.system.vcpu_counters(0).no_memslot == 2);
        CHECK(rig.mmu.counters().no_memslot == 2);
        rig.mmu.add_memslot(slots[0]);
        CHECK(rig.system.access_once(0, 1, Access::Read)); // back: the first write's stamp is there
        CHECK(rig.system.vcpu_counters(0).lost_writes == 0);
        CHECK(rig.system.verify_stamps(1) == 0); // the refused write is not expected
        CHECK(rig.mmu.audit().empty());
    }
}

TEST_CASE("soft churn: memslots removed and added back during a run lose nothing (both TLB models)") {
    for (TlbModel model : kModels) {
        CAPTURE(to_string(model));
        SoftRunConfig c = small(4, 32, 3000, model);
        c.memslots = 4;
        rate(c, SoftChurnOp::Memslot) = 2000;
        c.soft_churn.memslot_hold = std::chrono::microseconds(2000);
        c.min_churn_ops = 20;
        SoftRig rig(c, {});
        const SoftRunResult r = rig.run(c);
        INFO(describe(r));
        CHECK(r.ok());
        CHECK(attempted(r, SoftChurnOp::Memslot) >= 20);
        CHECK(done(r, SoftChurnOp::Memslot) > 0);
        CHECK(r.soft_churn.memslot_readds == done(r, SoftChurnOp::Memslot)); // every removal undone
        CHECK(r.vcpu.no_memslot > 0);
        CHECK(r.mmu.no_memslot >= r.vcpu.no_memslot);
        CHECK(rig.mmu.memslots().size() == 4);
    }
}

TEST_CASE("soft churn: a merged pair is read through one frame and a vCPU write breaks it, stamps intact") {
    for (TlbModel model : kModels) {
        CAPTURE(to_string(model));
        SoftRunConfig c = small(1, 8, 1, model);
        c.sharing = Sharing::Shared;
        SoftRig rig(c, {});
        REQUIRE(rig.system.access_once(0, 1, Access::Write));
        REQUIRE(rig.system.access_once(0, 2, Access::Write));
        // Discarded (the stamps' unmap excuse), read back zero-filled, merged.
        rig.system.unmap_pages(1, 2);
        const std::uint64_t h1 = SoftRig::kHostBase + kPage, h2 = SoftRig::kHostBase + 2 * kPage;
        REQUIRE(rig.host.fault(h1, Access::Read).status == HostFaultStatus::Mapped);
        REQUIRE(rig.host.fault(h2, Access::Read).status == HostFaultStatus::Mapped);
        REQUIRE(rig.host.merge(h1, h2));
        REQUIRE(rig.system.access_once(0, 1, Access::Read));
        REQUIRE(rig.system.access_once(0, 2, Access::Read));
        const std::uint64_t e1 = rig.mmu.entry(SoftRig::kGuestBase + kPage);
        const std::uint64_t e2 = rig.mmu.entry(SoftRig::kGuestBase + 2 * kPage);
        CHECK(X86PteFormat::pfn(e1) == X86PteFormat::pfn(e2)); // one frame
        CHECK_FALSE(X86PteFormat::writable(e1));
        const std::uint64_t breaks = rig.host.counters().cow_breaks;
        REQUIRE(rig.system.access_once(0, 2, Access::Write));
        CHECK(rig.host.counters().cow_breaks == breaks + 1);
        CHECK(X86PteFormat::pfn(rig.mmu.entry(SoftRig::kGuestBase + 2 * kPage)) != X86PteFormat::pfn(e1));
        CHECK(rig.system.vcpu_counters(0).unmap_excused == 2);
        CHECK(rig.system.vcpu_counters(0).lost_writes == 0);
        CHECK(rig.system.verify_stamps(1) == 0);
        CHECK(rig.system.audit_tlbs(1).empty());
        CHECK(rig.mmu.audit().empty());
    }
}

TEST_CASE("soft churn: zero-merges succeed during a run and vCPU writes break them (both TLB models)") {
    for (Sharing sharing : {Sharing::Disjoint, Sharing::Shared})
        for (TlbModel model : kModels) {
            const std::string name = std::string(to_string(sharing)) + "/" + to_string(model);
            CAPTURE(name);
            // 64 pages either way, few enough merges per second that a
            // merged pair lives until a running vCPU writes it (two vCPUs:
            // on a loaded machine more would mostly wait for a core).
            SoftRunConfig c = small(2, sharing == Sharing::Shared ? 64 : 32, 20000, model);
            c.sharing = sharing;
            rate(c, SoftChurnOp::ZeroMerge) = 1000;
            c.min_churn_ops = 40;
            SoftRig rig(c, {});
            const SoftRunResult r = rig.run(c);
            INFO(describe(r));
            CHECK(r.ok());
            CHECK(attempted(r, SoftChurnOp::ZeroMerge) >= 40);
            CHECK(done(r, SoftChurnOp::ZeroMerge) > 0);
            CHECK(r.host_merges >= done(r, SoftChurnOp::ZeroMerge));
            INFO("merged " << done(r, SoftChurnOp::ZeroMerge) << " of " << attempted(r, SoftChurnOp::ZeroMerge)
                           << ", cow breaks " << r.cow_breaks << ", writes " << r.vcpu.writes);
            CHECK(r.cow_breaks > 0);
            CHECK(r.vcpu.unmap_excused > 0);
        }
}

TEST_CASE("soft churn: a zap of more present entries than a batch resumes mid-range") {
    SoftRunConfig c = small(1, 200, 1, TlbModel::Recheck);
    c.sharing = Sharing::Shared;
    ShadowConfig p;
    p.batch = 64;
    SoftRig rig(c, p);
    for (std::uint64_t page = 0; page < 200; ++page) REQUIRE(rig.system.access_once(0, page, Access::Write));
    const ShadowCounters before = rig.mmu.counters();
    rig.system.unmap_pages(30, 140); // 140 present entries: 64 + 64 + 12
    const ShadowCounters zap = rig.mmu.counters().since(before);
    CHECK(zap.zaps == 140);
    CHECK(zap.batches == 3);
    CHECK(zap.resumed_batches == 2);
    CHECK(rig.system.verify_stamps(1) == 0);
}

TEST_CASE("soft churn: range operations straddle batch boundaries and their zaps resume (both TLB models)") {
    for (LockPolicy lock : {LockPolicy::Rw, LockPolicy::Split})
        for (TlbModel model : kModels) {
            const std::string name = std::string(to_string(lock)) + "/" + to_string(model);
            CAPTURE(name);
            SoftRunConfig c = small(4, 64, 4000, model);
            c.pattern = AccessPattern::Sequential;
            rate(c, SoftChurnOp::Range) = 1000;
            c.min_churn_ops = 30;
            ShadowConfig p;
            p.lock = lock;
            p.batch = 32;
            SoftRig rig(c, p);
            const SoftRunResult r = rig.run(c);
            INFO(describe(r));
            CHECK(r.ok());
            const std::uint64_t ranges = attempted(r, SoftChurnOp::Range);
            CHECK(ranges >= 30);
            CHECK(r.soft_churn.range_crossings == ranges); // one memslot of 256 pages: longer than a batch
            CHECK(r.soft_churn.range_pages >= ranges * 33);
            CHECK(r.soft_churn.range_pages <= ranges * 96);
            CHECK(done(r, SoftChurnOp::Range) > 0);
            CHECK(r.mmu.resumed_batches > 0);
            CHECK(r.mmu.max_batch <= 32);
        }
}

TEST_CASE("soft device: an external TLB beside the shadow MMU is populated, invalidated, coherent (both TLB models)") {
    for (TlbModel model : kModels) {
        CAPTURE(to_string(model));
        SoftRunConfig c = small(4, 32, 3000, model);
        c.device_rate = 50000;
        for (ChurnOp op : {ChurnOp::Migrate, ChurnOp::Unmap, ChurnOp::Protect})
            c.churn_rate[static_cast<std::size_t>(op)] = 3000;
        c.min_churn_ops = 30;
        SoftRig rig(c, {});
        const SoftRunResult r = rig.run(c);
        INFO(describe(r));
        CHECK(r.ok()); // includes the device TLB's audit
        CHECK(r.device.translations > 0);
        CHECK(r.device.ok > 0);
        CHECK(r.external_tlb.refills > 0);
        CHECK(r.external_tlb.range_flushes > 0);
        CHECK(r.external_tlb.entries_dropped > 0);
        CHECK(rig.host.notifiers().subscriber_count() == 1); // the device left the chain with the run
    }
}

TEST_CASE("external TLB audit: an entry that no invalidation reached is reported") {
    SoftRunConfig c = small(1, 8, 1, TlbModel::Recheck);
    SoftRig rig(c, {});
    ExternalTlb tlb(rig.host, 1, 8);
    const std::uint64_t ha = SoftRig::kHostBase + 3 * kPage;
    REQUIRE(tlb.translate(0, ha, Access::Read).ok());
    CHECK(tlb.audit().empty());
    REQUIRE(rig.host.migrate(ha)); // subscribed: the entry is flushed
    CHECK(tlb.audit().empty());
    REQUIRE(tlb.translate(0, ha, Access::Read).ok());
    rig.host.notifiers().unsubscribe(tlb); // from now on nothing reaches it
    REQUIRE(rig.host.migrate(ha));
    const auto problems = tlb.audit();
    REQUIRE(problems.size() == 1);
    CHECK(problems[0].find("external TLB context 0 maps host") == 0);
    CHECK(problems[0].find("but the host maps frame") != std::string::npos);
}

TEST_CASE("soft time limit: an install that is always stale ends the run with a report (both TLB models)") {
    for (TlbModel model : kModels) {
        CAPTURE(to_string(model));
        SoftRunConfig c = small(2, 8, 1000, model);
        c.time_limit = 1;
        SoftRig rig(c, {});
        // Every fault sees an invalidation between its host lookup and its
        // install: it retries for ever.
        rig.mmu.after_host_lookup = [&](std::uint32_t, std::uint64_t ga) {
            const std::uint64_t ha = SoftRig::kHostBase + (ga - SoftRig::kGuestBase);
            rig.host.protect({ha, ha + kPage}, true);
        };
        const auto t0 = std::chrono::steady_clock::now();
        const SoftRunResult r = rig.run(c);
        const double took = seconds_since(t0);
        INFO(describe(r));
        CHECK(took >= 1);
        CHECK(took < 10);
        CHECK(r.timed_out);
        CHECK_FALSE(r.ok());
        REQUIRE_FALSE(r.details.empty());
        CHECK(r.details[0].find("time limit of 1 s reached with 2 vCPUs still running") == 0);
        CHECK(r.mmu.retries > 0);
        CHECK(r.vcpu.accesses <= 2); // each vCPU's first access never completed
    }
}

TEST_CASE("soft time limit: a shootdown no vCPU acknowledges ends the run with a report (both TLB models)") {
    for (TlbModel model : kModels) {
        CAPTURE(to_string(model));
        SoftRunConfig rig_config = small(3, 16, 200, model);
        rig_config.sharing = Sharing::Shared;
        SoftRig rig(rig_config, {});
        rig.system.set_ack_wait(std::chrono::microseconds(0)); // recheck too waits for every ack
        // vCPU 2 caches a translation, enters an access and never reaches
        // another boundary: a zap of its table waits for it for ever.
        REQUIRE(rig.system.access_once(2, 0, Access::Read));
        rig.system.enter(2);
        SoftRunConfig c = rig_config;
        c.vcpus = 2;
        c.time_limit = 1.5;
        c.churn_rate[static_cast<std::size_t>(ChurnOp::Migrate)] = 5000;
        c.min_churn_ops = 100; // cannot be met: the churn thread is stuck in its first wait
        const auto t0 = std::chrono::steady_clock::now();
        const SoftRunResult r = rig.run(c);
        const double took = seconds_since(t0);
        rig.system.leave(2);
        INFO(describe(r));
        CHECK(took >= 1.5);
        CHECK(took < 12);
        CHECK(r.timed_out);
        CHECK_FALSE(r.ok());
        CHECK(r.shootdown.abandoned >= 1);
        REQUIRE_FALSE(r.details.empty());
        CHECK(r.details[0].find("time limit of 1.5 s reached") == 0);
    }
}
