// ShadowMmu's correctness suite, run under every lock policy x coherence
// policy x zap batch size. The rest of the suite is in test_mmu_shadow.cpp.
#include "mmu/secondary/shadow_mmu.hpp"
#include "tests/support/shadow_mmu_fixture.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <random>
#include <string>
#include <thread>
#include <vector>

using namespace hv::mmu;
using namespace hv::mmu::test::shadow_mmu;

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
