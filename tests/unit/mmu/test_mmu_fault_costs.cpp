// What a shadow fault costs, counted (DESIGN.md: counts that do not depend on
// the core count): lock acquisitions and read-modify-writes on cache lines
// that several vCPUs write, per lock policy, for cold faults (the host page
// is new) and warm ones (the host page is present), including the false
// sharing of per-frame lines between frames of different vCPUs. Also the
// walk registration that makes a vCPU that only reads a table a shootdown
// target, and the reader-slot lock the rw policy rests on.
#include "mmu/secondary/shadow_mmu.hpp"
#include "mmu/base/units.hpp"
#include "mmu/soft/mmu_stack.hpp"
#include "mmu/sync/reader_slot_lock.hpp"
#include "tests/support/shadow_rig.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <mutex>
#include <thread>
#include <vector>

using namespace hv::mmu;
using hv::mmu::test::ShadowRig;

namespace {
constexpr std::uint64_t kTableSpan = 512 * kPage;
constexpr std::uint64_t kHost = MmuStack::kHost;
constexpr std::uint64_t kGuest = 0x40000000;

// Two vCPUs, each faulting `pages` pages of its own 2 MiB leaf table (or of
// one shared table when `same_table`).
struct CostRig : ShadowRig {
    explicit CostRig(LockPolicy lock)
        : ShadowRig(8192, {lock, CoherencePolicy::Seq, 512, 2}, kGuest, 2 * kTableSpan / kPage) {
        map(2 * kTableSpan / kPage);
    }
    static std::uint64_t page(std::uint32_t vcpu, std::uint64_t i, bool same_table) {
        return kGuest + (same_table ? (2 * i + vcpu) * kPage : vcpu * kTableSpan + i * kPage);
    }
    ShadowCounters fault_all(std::uint64_t pages, bool same_table) {
        const ShadowCounters before = mmu.fault_counters();
        for (std::uint64_t i = 0; i < pages; ++i)
            for (std::uint32_t v = 0; v < 2; ++v) REQUIRE(mmu.fault(v, page(v, i, same_table), Access::Write) == FaultResult::Installed);
        return mmu.fault_counters().since(before);
    }
};

} // namespace

TEST_CASE("fault costs: warm disjoint faults write no shared line under rw and split, two per fault under global") {
    for (LockPolicy lock : {LockPolicy::Global, LockPolicy::Rw, LockPolicy::Split}) {
        CAPTURE(to_string(lock));
        CostRig r(lock);
        constexpr std::uint64_t n = 64;
        // Cold: every host page is new. Each vCPU's frames (pages and the
        // tables it creates) come from its own cache, refilled under the
        // allocator lock (2 shared RMWs) with aligned chunks, so its PT lock,
        // split lock and rmap lines are its own. What else is shared: each
        // table linked into its parent (host: the 3 levels below the root
        // for vCPU 0, a leaf for vCPU 1; the shadow alike: 8 links), each
        // vCPU's first mask slab (2 each) and its bit in its table's mask (1
        // each), and under global the mutex (2 per fault).
        const FrameCounters frames_before = r.frames.counters();
        const ShadowCounters cold = r.fault_all(n, false);
        const std::uint64_t refills = r.frames.counters().refills - frames_before.refills;
        CHECK(cold.faults == 2 * n);
        CHECK(refills >= 2); // at least one chunk per vCPU
        CHECK(refills <= 4); // 64 pages and 6 or 4 tables each: at most two chunks per vCPU
        CHECK(cold.shared_atomics + cold.host_shared_atomics ==
              2 * refills + 8 + 2 * 2 + 2 + (lock == LockPolicy::Global ? 2 * 2 * n : 0));
        // Warm: zap the shadow entries only; the host pages stay.
        r.mmu.zap_guest_range(kGuest, kGuest + 2 * kTableSpan);
        const ShadowCounters warm = r.fault_all(n, false);
        CHECK(warm.faults == 2 * n);
        CHECK(warm.host_shared_atomics == 0);
        CHECK(warm.host_lock_acquisitions == 0);         // a present, accessed, dirty PTE: read without the PT lock
        // The policy lock, and the frame's rmap head (a compare-exchange
        // counted as a lock) except under global, whose mutex excludes every
        // other rmap writer (a plain store).
        CHECK(warm.lock_acquisitions == (lock == LockPolicy::Global ? 1 : 2) * 2 * n);
        CHECK(warm.shared_atomics == (lock == LockPolicy::Global ? 2 * 2 * n : 0));
    }
}

TEST_CASE("fault costs: per-frame lines of frames from the shared pool count as shared") {
    for (LockPolicy lock : {LockPolicy::Rw, LockPolicy::Split}) {
        CAPTURE(to_string(lock));
        CostRig r(lock);
        // The host faults vCPU 0's pages in without a CPU (kAnyCpu): the
        // pages and the host leaf table come from the shared pool, whose
        // frames are handed to whoever asks, so neighbouring frames' rmap
        // heads, and the host PT lock's line, are other CPUs' too.
        constexpr std::uint64_t n = 16;
        for (std::uint64_t i = 0; i < n; ++i)
            REQUIRE(r.host.fault(kHost + i * kPage, Access::Write).status == HostFaultStatus::Mapped);
        const ShadowCounters before = r.mmu.fault_counters();
        for (std::uint64_t i = 0; i < n; ++i)
            REQUIRE(r.mmu.fault(0, CostRig::page(0, i, false), Access::Write) == FaultResult::Installed);
        const ShadowCounters after = r.mmu.fault_counters();
        // Host: nothing (the pages are present: no PT lock). Shadow: the
        // rmap head (1 per fault) plus creating the leaf table (its links,
        // the slab and the mask bit): the shadow tables come from vCPU 0's
        // cache, so the split lock's line is vCPU 0's.
        CHECK(after.host_shared_atomics - before.host_shared_atomics == 0);
        CHECK(after.shared_atomics - before.shared_atomics >= n);
        CHECK(after.shared_atomics - before.shared_atomics <= n + 2 + 3 + 2 + 1);
        // A page the host faulted in for vCPU 0 (its own chunk): nothing shared.
        REQUIRE(r.host.fault(kHost + n * kPage, Access::Write, 0).status == HostFaultStatus::Mapped);
        const ShadowCounters own_before = r.mmu.fault_counters();
        REQUIRE(r.mmu.fault(0, CostRig::page(0, n, false), Access::Write) == FaultResult::Installed);
        const ShadowCounters own_after = r.mmu.fault_counters();
        CHECK(own_after.shared_atomics - own_before.shared_atomics == 0);
        CHECK(own_after.host_shared_atomics - own_before.host_shared_atomics == 0);
        // A read fault on a page that is present but not yet accessed takes
        // the PT lock to mark it: a shared-pool table's lock is shared (2).
        REQUIRE(r.host.age({kHost, kHost + kTableSpan}));
        const ShadowCounters aged_before = r.mmu.fault_counters();
        REQUIRE(r.mmu.fault(0, CostRig::page(0, 1, false), Access::Read) == FaultResult::Installed);
        const ShadowCounters aged_after = r.mmu.fault_counters();
        CHECK(aged_after.host_lock_acquisitions - aged_before.host_lock_acquisitions == 1);
        CHECK(aged_after.host_shared_atomics - aged_before.host_shared_atomics == 2);
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
    CHECK(r.sd.last() == std::vector<std::uint32_t>{0, 1});
    // A table nobody walked or faulted into is nobody's target.
    CHECK(r.mmu.walk(1, CostRig::page(1, 0, false)) == 0); // no leaf table there yet
    CHECK(r.mmu.vcpu_counters(1).walk_registrations == 1);
}

TEST_CASE("ReaderSlotLock: a writer excludes readers of every slot, readers share, in both modes") {
  for (const auto mode : {ReaderSlotLock::Mode::Symmetric, ReaderSlotLock::Mode::RareWriters}) {
    CAPTURE(static_cast<int>(mode));
    ReaderSlotLock lock(4, mode);
    if (mode == ReaderSlotLock::Mode::Symmetric) CHECK_FALSE(lock.asymmetric());
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
}

TEST_CASE("ReaderSlotLock: a reader that waits for a writer sleeps and is woken by its unlock, in both modes") {
    for (const auto mode : {ReaderSlotLock::Mode::Symmetric, ReaderSlotLock::Mode::RareWriters}) {
        CAPTURE(static_cast<int>(mode));
        ReaderSlotLock lock(2, mode);
        std::atomic<int> phase{0};
        lock.lock();
        std::thread reader([&] {
            phase.store(1);
            ReaderSlotLock::SharedGuard g(lock, 1); // waits for the writer
            phase.store(2);
        });
        while (phase.load() != 1) std::this_thread::yield();
        for (int i = 0; i < 50; ++i) std::this_thread::yield(); // let it block
        CHECK(phase.load() == 1);
        lock.unlock();
        reader.join();
        CHECK(phase.load() == 2);
        // And a writer waits for a reader inside.
        lock.lock_shared(0);
        std::atomic<bool> written{false};
        std::thread writer([&] {
            std::unique_lock g(lock);
            written.store(true);
        });
        for (int i = 0; i < 50; ++i) std::this_thread::yield();
        CHECK_FALSE(written.load());
        lock.unlock_shared(0);
        writer.join();
        CHECK(written.load());
    }
}

TEST_CASE("fault costs: a write that breaks copy-on-write pays the notifier chain and the merged frame's count") {
    CostRig r(LockPolicy::Rw);
    r.fault_all(2, false); // pages 0 and 1 of vCPU 0 (and of vCPU 1), all zero
    REQUIRE(r.host.merge(kHost, kHost + kPage));
    const ShadowCounters before = r.mmu.fault_counters();
    CHECK(r.mmu.fault(0, CostRig::page(0, 1, false), Access::Write) == FaultResult::Retry); // the break moved the sequence
    const ShadowCounters after = r.mmu.fault_counters();
    // PT lock (finds the merged page), region lock (vCPU 0's own reader
    // slot), the frame cache's lock (a hit: vCPU 0's chunk has frames
    // left) and the PT lock in the break.
    CHECK(after.host_lock_acquisitions - before.host_lock_acquisitions == 4);
    // The notifier chain's reader count 2, the merged frame's map count 1
    // (its line is every mapper's), and the PT lock twice (2 each): the
    // merge freed vCPU 0's second page, so its chunk's lines -- the PT
    // lock's among them -- are no longer vCPU 0's alone. The region lock is
    // vCPU 0's own reader slot.
    CHECK(after.host_shared_atomics - before.host_shared_atomics == 2 + 1 + 2 * 2);
    CHECK(r.host.counters().cow_breaks == 1);
}
