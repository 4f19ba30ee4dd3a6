// ShadowMmu: faults through memslots and host tables, zaps driven by host
// operations, batching, shootdown targets, aliasing and the rmap, forced
// fault/invalidate races under each coherence policy, and one correctness
// suite run under every lock policy x coherence policy x batch size.
#include "mmu/secondary/shadow_mmu.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <thread>
#include <vector>

using namespace hv::mmu;

namespace {

constexpr std::uint64_t kHost = 0x7f0000000000; // host addresses
constexpr std::uint64_t kGuest = 0x10000000;    // guest addresses

struct RecordingShootdown final : TlbShootdown {
    std::vector<std::vector<std::uint32_t>> targets;
    std::vector<std::size_t> sizes;
    void shootdown(const VcpuMask& t, std::span<const std::uint64_t> pages) override {
        std::vector<std::uint32_t> v;
        t.for_each([&](std::uint32_t c) { v.push_back(c); });
        targets.push_back(v);
        sizes.push_back(pages.size());
    }
};

struct Rig {
    FrameSpace frames;
    HostAddressSpace host;
    RecordingShootdown sd;
    ShadowMmu mmu;
    Rig(ShadowConfig cfg, std::size_t pages = 1024, std::size_t nframes = 4096)
        : frames(nframes), host(frames), mmu(host, cfg, &sd) {
        host.map_anonymous({kHost, kHost + pages * kPage}, true);
        mmu.add_memslot({1, kGuest, pages * kPage, kHost, true});
    }
    std::uint8_t* guest_bytes(std::uint64_t ga) {
        const std::uint64_t e = mmu.entry(ga);
        REQUIRE(e != 0);
        return frames.bytes(X86PteFormat::pfn(e)).data();
    }
};

ShadowConfig cfg(LockPolicy l = LockPolicy::Rw, CoherencePolicy c = CoherencePolicy::Seq, std::size_t batch = 512,
                 std::uint32_t vcpus = 4) {
    return {l, c, batch, vcpus};
}

} // namespace

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

// The correctness suite under every policy combination: threads fault and
// write through their entries while a host thread migrates, unmaps,
// protects, swaps, merges and ages; at the end every guest page must hold
// the last value its owner wrote (no lost writes) and the audit is clean.
TEST_CASE("policy matrix: concurrent faults and host churn lose no writes") {
    for (LockPolicy lock : {LockPolicy::Global, LockPolicy::Rw, LockPolicy::Split})
        for (CoherencePolicy coh : {CoherencePolicy::Seq, CoherencePolicy::PtLock, CoherencePolicy::RangeActive})
            for (std::size_t batch : {std::size_t{1}, std::size_t{64}, std::size_t{0}}) {
                const std::string lock_policy = to_string(lock);
            CAPTURE(lock_policy);
                const std::string coherence = to_string(coh);
            CAPTURE(coherence);
                CAPTURE(batch);
                constexpr int kThreads = 3, kPagesPer = 40;
                Rig r(cfg(lock, coh, batch, kThreads), kThreads * kPagesPer, 2048);
                std::atomic<bool> stop{false};
                std::vector<std::vector<std::uint32_t>> last(kThreads, std::vector<std::uint32_t>(kPagesPer, 0));
                std::atomic<int> violations{0};
                // A thread writes only its own pages, and only through a
                // translation it holds the host PT lock for, as a CPU writes
                // through its TLB entry: the host cannot move the page under it.
                auto writer = [&](int t) {
                    std::mt19937 rng(t);
                    for (std::uint32_t n = 1; !stop; ++n) {
                        const int p = static_cast<int>(rng() % kPagesPer);
                        const std::uint64_t ga = kGuest + (t * kPagesPer + p) * kPage;
                        const std::uint64_t ha = kHost + (t * kPagesPer + p) * kPage;
                        FaultResult res;
                        do res = r.mmu.fault(t, ga, Access::Write);
                        while (res == FaultResult::Retry);
                        if (res != FaultResult::Installed) continue; // protected right now
                        auto guard = r.host.lock_pte(ha);
                        const std::uint64_t e = r.mmu.entry(ga);
                        if (!guard || e == 0 || !X86PteFormat::writable(e)) continue; // zapped meanwhile: refault
                        if (X86PteFormat::pfn(e) != X86PteFormat::pfn(guard.pte()) || !X86PteFormat::present(guard.pte())) {
                            ++violations; // a present entry disagrees with the host
                            continue;
                        }
                        std::uint32_t* word = reinterpret_cast<std::uint32_t*>(r.frames.bytes(X86PteFormat::pfn(e)).data());
                        if (*word != last[t][p]) ++violations; // a lost or misdirected write
                        *word = n;
                        last[t][p] = n;
                    }
                };
                std::vector<std::thread> threads;
                for (int t = 0; t < kThreads; ++t) threads.emplace_back(writer, t);
                std::mt19937 rng(99);
                const std::uint64_t pages = kThreads * kPagesPer;
                for (int op = 0; op < 300; ++op) {
                    const std::uint64_t a = kHost + (rng() % pages) * kPage;
                    switch (rng() % 5) {
                    case 0: r.host.migrate(a); break;
                    case 1: r.host.swap_out(a); break;
                    case 2: r.host.protect({a, a + kPage}, false); r.host.protect({a, a + kPage}, true); break;
                    case 3: r.host.merge(a, kHost + (rng() % pages) * kPage); break;
                    case 4: r.host.age({a, a + 8 * kPage}); break;
                    }
                }
                stop = true;
                for (auto& t : threads) t.join();
                CHECK(violations == 0);
                CHECK(r.mmu.audit().empty());
                // Every page still holds its owner's last write.
                int lost = 0;
                for (int t = 0; t < kThreads; ++t)
                    for (int p = 0; p < kPagesPer; ++p) {
                        const std::uint64_t ha = kHost + (t * kPagesPer + p) * kPage;
                        auto h = r.host.fault(ha, Access::Read);
                        REQUIRE(h.status == HostFaultStatus::Mapped);
                        if (*reinterpret_cast<std::uint32_t*>(r.frames.bytes(h.translation.pfn).data()) != last[t][p]) ++lost;
                    }
                CHECK(lost == 0);
            }
}
