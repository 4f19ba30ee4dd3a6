// What a shadow fault costs, counted (DESIGN.md: counts that do not depend on
// the core count): lock acquisitions and read-modify-writes on cache lines
// that several vCPUs write, per lock policy, for cold faults (the host page
// is new) and warm ones (the host page is present). Also the walk
// registration that makes a vCPU that only reads a table a shootdown target,
// and the reader-slot lock the rw policy rests on.
#include "reader_slot_lock.hpp"
#include "shadow_mmu.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <thread>
#include <vector>

using namespace hv::mmu;

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kTableSpan = 512 * kPage;
constexpr std::uint64_t kHost = 0x7f0000000000;
constexpr std::uint64_t kGuest = 0x40000000;

struct Targets final : TlbShootdown {
    std::vector<std::uint32_t> last;
    void shootdown(const VcpuMask& t, std::span<const std::uint64_t>) override {
        last.clear();
        t.for_each([&](std::uint32_t c) { last.push_back(c); });
    }
};

// Two vCPUs, each faulting `pages` pages of its own 2 MiB leaf table (or of
// one shared table when `same_table`).
struct CostRig {
    FrameSpace frames{8192};
    HostAddressSpace host{frames};
    Targets sd;
    ShadowMmu mmu;
    explicit CostRig(LockPolicy lock) : mmu(host, {lock, CoherencePolicy::Seq, 512, 2}, &sd) {
        host.map_anonymous({kHost, kHost + 2 * kTableSpan}, true);
        mmu.add_memslot({1, kGuest, 2 * kTableSpan, kHost, true});
    }
    static std::uint64_t page(std::uint32_t vcpu, std::uint64_t i, bool same_table) {
        return kGuest + (same_table ? (2 * i + vcpu) * kPage : vcpu * kTableSpan + i * kPage);
    }
    ShadowCounters fault_all(std::uint64_t pages, bool same_table) {
        const ShadowCounters before = mmu.fault_counters();
        for (std::uint64_t i = 0; i < pages; ++i)
            for (std::uint32_t v = 0; v < 2; ++v) REQUIRE(mmu.fault(v, page(v, i, same_table), Access::Write) == FaultResult::Installed);
        ShadowCounters d = mmu.fault_counters();
        d.faults -= before.faults;
        d.lock_acquisitions -= before.lock_acquisitions;
        d.shared_atomics -= before.shared_atomics;
        d.host_lock_acquisitions -= before.host_lock_acquisitions;
        d.host_shared_atomics -= before.host_shared_atomics;
        return d;
    }
};

} // namespace

TEST_CASE("fault costs: warm disjoint faults write no shared line under rw and split, two per fault under global") {
    for (LockPolicy lock : {LockPolicy::Global, LockPolicy::Rw, LockPolicy::Split}) {
        CAPTURE(to_string(lock));
        CostRig r(lock);
        constexpr std::uint64_t n = 64;
        // Cold: every host page is new, so the host pays its region lock and
        // the frame allocator (2 + 2 shared RMWs; 4 locks, the PT lock
        // counted twice: once to find the page absent, once to fill it).
        const ShadowCounters cold = r.fault_all(n, false);
        CHECK(cold.faults == 2 * n);
        CHECK(cold.host_shared_atomics == 4 * 2 * n);
        // The first fault in each vCPU's leaf table finds no table to lock first.
        CHECK(cold.host_lock_acquisitions == 4 * 2 * n - 2);
        // Warm: zap the shadow entries only; the host pages stay.
        r.mmu.zap_guest_range(kGuest, kGuest + 2 * kTableSpan);
        const ShadowCounters warm = r.fault_all(n, false);
        CHECK(warm.faults == 2 * n);
        CHECK(warm.host_shared_atomics == 0);
        CHECK(warm.host_lock_acquisitions == 2 * n);     // the host PT lock
        CHECK(warm.lock_acquisitions == 2 * 2 * n);      // the policy lock and the frame's rmap lock
        CHECK(warm.shared_atomics == (lock == LockPolicy::Global ? 2 * 2 * n : 0));
    }
}

TEST_CASE("fault costs: a split table lock counts as shared once two vCPUs use the table") {
    CostRig r(LockPolicy::Split);
    r.fault_all(8, true);
    r.mmu.zap_guest_range(kGuest, kGuest + 2 * kTableSpan);
    const ShadowCounters warm = r.fault_all(8, true);
    CHECK(warm.shared_atomics == 2 * 2 * 8);
}

TEST_CASE("walk: a vCPU that only reads a table becomes a target of the next zap there") {
    CostRig r(LockPolicy::Rw);
    const std::uint64_t ga = CostRig::page(0, 3, false);
    REQUIRE(r.mmu.fault(0, ga, Access::Write) == FaultResult::Installed);
    CHECK(r.mmu.walk(1, ga + 5 * kPage) == 0); // a hole, but vCPU 1 walked the table
    const std::uint64_t e = r.mmu.walk(1, ga);
    CHECK(X86PteFormat::present(e));
    CHECK(r.mmu.vcpu_counters(1).walk_registrations == 1);
    CHECK(r.mmu.vcpu_counters(1).faults == 0);
    r.mmu.zap_guest_range(ga, ga + kPage);
    CHECK(r.sd.last == std::vector<std::uint32_t>{0, 1});
    // A table nobody walked or faulted into is nobody's target.
    CHECK(r.mmu.walk(1, CostRig::page(1, 0, false)) == 0); // no leaf table there yet
    CHECK(r.mmu.vcpu_counters(1).walk_registrations == 1);
}

TEST_CASE("ReaderSlotLock: a writer excludes readers of every slot, readers share") {
    ReaderSlotLock lock(4);
    int value = 0; // written only under the exclusive lock
    std::atomic<int> inside{0}, max_inside{0};
    std::atomic<bool> writer_saw_reader{false};
    std::vector<std::thread> threads;
    for (std::uint32_t slot : {0u, 1u, 2u, 3u, lock.shared_slot(), lock.shared_slot()})
        threads.emplace_back([&, slot] {
            for (int i = 0; i < 20000; ++i) {
                ReaderSlotLock::SharedGuard g(lock, slot);
                const int n = inside.fetch_add(1) + 1;
                for (int m = max_inside.load(); n > m && !max_inside.compare_exchange_weak(m, n);) {}
                (void)value; // a read under the shared lock
                inside.fetch_sub(1);
            }
        });
    threads.emplace_back([&] {
        for (int i = 0; i < 2000; ++i) {
            std::unique_lock g(lock);
            if (inside.load() != 0) writer_saw_reader = true;
            ++value;
        }
    });
    for (auto& t : threads) t.join();
    CHECK(value == 2000);
    CHECK_FALSE(writer_saw_reader.load());
    CHECK(max_inside.load() >= 1);
}

TEST_CASE("fault costs: a write that breaks copy-on-write pays the region lock, the notifier chain and the allocator") {
    CostRig r(LockPolicy::Rw);
    r.fault_all(2, false); // pages 0 and 1 of vCPU 0 (and of vCPU 1), all zero
    REQUIRE(r.host.merge(kHost, kHost + kPage));
    const ShadowCounters before = r.mmu.fault_counters();
    CHECK(r.mmu.fault(0, CostRig::page(0, 1, false), Access::Write) == FaultResult::Retry); // the break moved the sequence
    const ShadowCounters after = r.mmu.fault_counters();
    // PT lock (finds the merged page), region lock, PT lock and allocator in the break.
    CHECK(after.host_lock_acquisitions - before.host_lock_acquisitions == 4);
    // Region lock 2, notifier chain reader count 2, allocator 2.
    CHECK(after.host_shared_atomics - before.host_shared_atomics == 6);
    CHECK(r.host.counters().cow_breaks == 1);
}
