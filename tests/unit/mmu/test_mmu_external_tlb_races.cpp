// ExternalTlb's races with the host: the range-active back-off, host changes
// landing between a refill's lookup, reservation and install, a
// non-blockable start finding a TLB lock busy, and a threaded run checking
// that no vCPU keeps a stale translation. The rest is in
// test_mmu_external_tlb.cpp.
#include "mmu/secondary/external_tlb.hpp"
#include "mmu/secondary/shadow_mmu.hpp"
#include "tests/support/external_tlb_fixture.hpp"

#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <optional>
#include <random>
#include <thread>
#include <vector>

using namespace hv::mmu;
using namespace hv::mmu::test::external_tlb;

TEST_CASE("external TLB: a miss during an active range backs off, and refills after the end") {
    Rig r;
    const std::uint64_t p = kHost, q = kHost + 10 * kPage, s = kHost + 20 * kPage;
    REQUIRE(r.tlb.translate(0, p, Access::Read).ok());
    REQUIRE(r.tlb.translate(0, s, Access::Read).ok());
    auto inv = r.host.notifiers().begin({p, p + kPage}, InvalidateEvent::Migrate, true);
    REQUIRE(inv);
    CHECK(r.tlb.range_active() == 1);
    CHECK_FALSE(r.tlb.probe(0, p)); // flushed at the start
    CHECK(r.tlb.translate(0, p, Access::Read).status == TlbStatus::Retry);
    // The GRU backs off on any active range, not only the overlapping one.
    CHECK(r.tlb.translate(1, q, Access::Read).status == TlbStatus::Retry);
    // A hit needs no refill: it is answered.
    CHECK(r.tlb.translate(0, s, Access::Read).status == TlbStatus::Hit);
    CHECK(r.tlb.counters().retries == 2);
    inv->end();
    CHECK(r.tlb.range_active() == 0);
    CHECK(r.tlb.translate(0, p, Access::Read).status == TlbStatus::Refilled);
    CHECK(r.tlb.translate(1, q, Access::Read).status == TlbStatus::Refilled);
}

TEST_CASE("external TLB: a migration completing between the refill's host lookup and its install leaves no stale entry") {
    for (bool page_mode : {false, true}) {
        CAPTURE(page_mode);
        Rig r(page_mode);
        REQUIRE(r.host.fault(kHost, Access::Write).status == HostFaultStatus::Mapped);
        const Pfn old = host_pfn(r.host, kHost);
        int fired = 0;
        r.tlb.after_host_lookup = [&](std::uint32_t, std::uint64_t) {
            if (fired++) return;
            REQUIRE(r.host.migrate(kHost)); // a whole start..end (or invalidate_page) in the window
        };
        const TlbResult t = r.tlb.translate(0, kHost, Access::Read);
        CHECK(t.status == TlbStatus::Retry);
        CHECK(fired == 1);
        CHECK(r.tlb.counters().revalidation_failures == 1); // host.lookup no longer matched
        CHECK_FALSE(r.tlb.probe(0, kHost));
        CHECK(r.tlb.valid_entries(0) == 0); // the reservation is gone too
        CHECK(r.tlb.range_active() == 0);
        const TlbResult t2 = r.tlb.translate(0, kHost, Access::Read);
        REQUIRE(t2.status == TlbStatus::Refilled);
        CHECK(t2.pfn != old);
        CHECK(t2.pfn == host_pfn(r.host, kHost));
    }
}

TEST_CASE("external TLB: a migration between the reservation and the re-validation cancels the reservation") {
    for (bool page_mode : {false, true}) {
        CAPTURE(page_mode);
        Rig r(page_mode);
        REQUIRE(r.host.fault(kHost, Access::Write).status == HostFaultStatus::Mapped);
        const Pfn old = host_pfn(r.host, kHost);
        int fired = 0;
        r.tlb.after_reserve = [&](std::uint32_t, std::uint64_t) {
            if (fired++) return;
            CHECK_FALSE(r.tlb.probe(0, kHost)); // reserved, but no hit may use it
            REQUIRE(r.host.migrate(kHost));
        };
        CHECK(r.tlb.translate(0, kHost, Access::Read).status == TlbStatus::Retry);
        const auto c = r.tlb.counters();
        CHECK(c.cancelled == 1); // the flush took the reservation
        CHECK(c.entries_dropped == 0); // ... which held no usable translation
        CHECK(r.tlb.valid_entries(0) == 0);
        const TlbResult t2 = r.tlb.translate(0, kHost, Access::Read);
        REQUIRE(t2.status == TlbStatus::Refilled);
        CHECK(t2.pfn != old);
        CHECK(t2.pfn == host_pfn(r.host, kHost));
    }
}

TEST_CASE("external TLB: a start that flushed before the refill's install makes it retry (the host PTE has not changed yet)") {
    Rig r;
    REQUIRE(r.host.fault(kHost, Access::Write).status == HostFaultStatus::Mapped);
    std::optional<RangeInvalidation> inv;
    r.tlb.after_host_lookup = [&](std::uint32_t, std::uint64_t) {
        if (!inv) inv = r.host.notifiers().begin({kHost, kHost + kPage}, InvalidateEvent::Unmap, true);
    };
    // The host translation is unchanged, so only the range-active check at
    // the reservation stops the install that would outlive the unmap.
    CHECK(r.tlb.translate(0, kHost, Access::Read).status == TlbStatus::Retry);
    CHECK(r.tlb.counters().revalidation_failures == 0);
    CHECK(r.tlb.counters().cancelled == 0);
    CHECK_FALSE(r.tlb.probe(0, kHost));
    r.tlb.after_host_lookup = nullptr;
    inv->end();
    CHECK(r.tlb.translate(0, kHost, Access::Read).status == TlbStatus::Refilled);
}

TEST_CASE("external TLB: a non-blockable start finding a TLB lock busy answers TryAgain and leaves no count behind") {
    Rig r;
    bool began = true;
    r.tlb.while_locked = [&](std::uint32_t, std::uint64_t) {
        std::thread t([&] { began = r.host.notifiers().begin({kHost, kHost + kPage}, InvalidateEvent::Unmap, false).has_value(); });
        t.join();
    };
    CHECK(r.tlb.translate(0, kHost, Access::Read).status == TlbStatus::Refilled);
    CHECK_FALSE(began);
    CHECK(r.tlb.counters().try_again == 1);
    CHECK(r.tlb.range_active() == 0);
    CHECK(r.host.notifiers().counters().try_again == 1);
    r.tlb.while_locked = nullptr;
    // Uncontended, a non-blockable start flushes like a blockable one.
    auto inv = r.host.notifiers().begin({kHost, kHost + kPage}, InvalidateEvent::Unmap, false);
    REQUIRE(inv);
    CHECK_FALSE(r.tlb.probe(0, kHost));
    inv->end();
    CHECK(r.tlb.range_active() == 0);
}

TEST_CASE("external TLB under concurrency: no vCPU keeps a translation the host no longer has") {
    for (bool page_mode : {false, true}) {
        CAPTURE(page_mode);
        constexpr std::uint32_t kVcpus = 4;
        constexpr std::uint64_t kPages = 24;
        Rig r(page_mode, kVcpus, 16, kPages, 2048);
        std::atomic<bool> stop{false};
        std::atomic<std::uint64_t> ok{0}, stale{0}, raced{0}, retries{0}, unexpected{0};
        auto check_answer = [&](std::uint32_t v, std::uint64_t a, const TlbResult& t) {
            // Under the host PT lock the host PTE cannot change. If it no
            // longer matches the answer, the answer was flushed since (a
            // race, fine), unless the TLB still holds it (a stale entry).
            auto guard = r.host.lock_pte(a);
            const std::uint64_t pte = guard ? guard.pte() : 0;
            const bool current = X86PteFormat::present(pte) && X86PteFormat::pfn(pte) == t.pfn &&
                                 (!t.writable || X86PteFormat::writable(pte));
            if (current) return;
            const auto e = r.tlb.probe(v, a);
            if (e && (!X86PteFormat::present(pte) || X86PteFormat::pfn(pte) != e->pfn ||
                      (e->writable && !X86PteFormat::writable(pte))))
                stale.fetch_add(1);
            else
                raced.fetch_add(1);
        };
        std::vector<std::thread> threads;
        for (std::uint32_t v = 0; v < kVcpus; ++v)
            threads.emplace_back([&, v] {
                std::mt19937_64 rng(v + 1);
                while (!stop.load(std::memory_order_relaxed)) {
                    const std::uint64_t a = kHost + (rng() % kPages) * kPage;
                    const Access acc = rng() % 8 == 0 ? Access::Write : Access::Read;
                    const TlbResult t = r.tlb.translate(v, a, acc);
                    if (t.ok()) {
                        ok.fetch_add(1, std::memory_order_relaxed);
                        check_answer(v, a, t);
                    } else if (t.status == TlbStatus::Retry) {
                        retries.fetch_add(1, std::memory_order_relaxed);
                    } else if (t.status != TlbStatus::Refused) { // Refused: a write to a protected page
                        unexpected.fetch_add(1, std::memory_order_relaxed);
                    }
                }
            });
        threads.emplace_back([&] {
            std::mt19937_64 rng(99);
            while (!stop.load(std::memory_order_relaxed)) {
                const std::uint64_t a = kHost + (rng() % kPages) * kPage;
                switch (rng() % 6) {
                case 0: r.host.unmap({a, a + kPage}); break;
                case 1: r.host.protect({a, a + kPage}, rng() % 2 == 0); break;
                case 2: r.host.swap_out(a); break;
                case 3: r.host.merge(a, kHost + (rng() % kPages) * kPage); break;
                default: r.host.migrate(a); break;
                }
            }
        });
        std::this_thread::sleep_for(std::chrono::milliseconds(300));
        stop = true;
        for (auto& t : threads) t.join();
        CHECK(stale.load() == 0);
        CHECK(unexpected.load() == 0);
        CHECK(ok.load() > 0);
        CHECK(r.tlb.range_active() == 0);
        // Quiescent: every entry of every vCPU agrees with the host.
        int bad = 0;
        for (std::uint32_t v = 0; v < kVcpus; ++v)
            for (std::uint64_t i = 0; i < kPages; ++i) {
                const auto e = r.tlb.probe(v, kHost + i * kPage);
                if (!e) continue;
                const auto h = r.host.lookup(kHost + i * kPage);
                if (!h || h->pfn != e->pfn || (e->writable && !h->writable)) ++bad;
            }
        CHECK(bad == 0);
        const auto c = r.tlb.counters();
        MESSAGE("page_mode=" << page_mode << " ok=" << ok.load() << " raced=" << raced.load()
                             << " retries=" << retries.load() << " hits=" << c.hits << " refills=" << c.refills
                             << " range_flushes=" << c.range_flushes << " page_flushes=" << c.page_flushes
                             << " dropped=" << c.entries_dropped << " shared_atomics=" << c.shared_atomics);
        CHECK(c.hits + c.refills == ok.load());
    }
}
