// ExternalTlb (the GRU-like subscriber): hits, misses and refills; host
// operations flushing every vCPU's TLB in both notifier shapes (range
// start/end and the 2008 invalidate_page); side by side with a ShadowMmu;
// aging; replacement; release. The races are in
// test_mmu_external_tlb_races.cpp.
#include "mmu/secondary/external_tlb.hpp"
#include "mmu/secondary/shadow_mmu.hpp"
#include "tests/support/external_tlb_fixture.hpp"

#include <doctest/doctest.h>

#include <cstring>
#include <string>

using namespace hv::mmu;
using namespace hv::mmu::test::external_tlb;

TEST_CASE("external TLB: miss refills from the host tables, then hits, then each vCPU has its own TLB") {
    Rig r;
    const std::uint64_t a = kHost + 5 * kPage + 7;
    const TlbResult first = r.tlb.translate(0, a, Access::Write);
    REQUIRE(first.status == TlbStatus::Refilled);
    CHECK(first.pfn == host_pfn(r.host, a));
    CHECK(first.writable);
    const TlbResult again = r.tlb.translate(0, a + 100, Access::Read);
    CHECK(again.status == TlbStatus::Hit);
    CHECK(again.pfn == first.pfn);
    // Another vCPU's TLB is empty: a miss, refilled with the same frame.
    const TlbResult other = r.tlb.translate(1, a, Access::Read);
    CHECK(other.status == TlbStatus::Refilled);
    CHECK(other.pfn == first.pfn);
    CHECK(r.tlb.valid_entries(0) == 1);
    CHECK(r.tlb.valid_entries(1) == 1);
    CHECK(r.tlb.valid_entries(2) == 0);
    const auto c = r.tlb.counters();
    CHECK(c.translations == 3);
    CHECK(c.hits == 1);
    CHECK(c.misses == 2);
    CHECK(c.refills == 2);
    CHECK(c.retries == 0);
    CHECK(c.shared_atomics == 0); // translating writes no shared line
    // Outside every host mapping; a vCPU out of range.
    CHECK(r.tlb.translate(0, kHost - kPage, Access::Read).status == TlbStatus::NoMapping);
    CHECK(r.tlb.counters().no_mapping == 1);
    CHECK_THROWS_AS(r.tlb.translate(4, a, Access::Read), std::out_of_range);
    CHECK_THROWS_AS(ExternalTlb(r.host, 0, 8), std::invalid_argument);
    CHECK_THROWS_AS(ExternalTlb(r.host, 1, 0), std::invalid_argument);
    CHECK(r.host.notifiers().subscriber_count() == 1); // the failed constructions did not subscribe
}

TEST_CASE("external TLB: a read-only host page refuses writes, then a read-only entry does not satisfy a write") {
    Rig r;
    REQUIRE(r.tlb.translate(0, kHost, Access::Read).status == TlbStatus::Refilled);
    CHECK(r.tlb.probe(0, kHost)->writable); // the region is writable: so is the zero-filled page
    r.host.protect({kHost, kHost + kPage}, false);
    CHECK_FALSE(r.tlb.probe(0, kHost)); // protect flushed it
    const TlbResult rd = r.tlb.translate(0, kHost, Access::Read);
    REQUIRE(rd.status == TlbStatus::Refilled);
    CHECK_FALSE(rd.writable);
    CHECK(r.tlb.translate(0, kHost, Access::Read).status == TlbStatus::Hit);
    // The entry is read-only: a write misses, and the host refuses it.
    CHECK(r.tlb.translate(0, kHost, Access::Write).status == TlbStatus::Refused);
    CHECK(r.tlb.counters().refused == 1);
    r.host.protect({kHost, kHost + kPage}, true);
    const TlbResult wr = r.tlb.translate(0, kHost, Access::Write);
    CHECK(wr.status == TlbStatus::Refilled);
    CHECK(wr.writable);
}

TEST_CASE("external TLB: host unmap, migrate, protect and swap-out flush the page on every vCPU") {
    for (bool page_mode : {false, true}) {
        CAPTURE(page_mode);
        for (int op = 0; op < 4; ++op) {
            const char* names[] = {"unmap", "migrate", "protect", "swap_out"};
            const std::string name = names[op];
            CAPTURE(name);
            Rig r(page_mode);
            const std::uint64_t p = kHost + 3 * kPage, q = kHost + 4 * kPage;
            for (std::uint32_t v = 0; v < 4; ++v) {
                REQUIRE(r.tlb.translate(v, p, Access::Write).ok());
                REQUIRE(r.tlb.translate(v, q, Access::Write).ok());
            }
            const Pfn before = host_pfn(r.host, p);
            std::memset(r.frames.bytes(before).data(), 0x5a, kPage);
            const auto c0 = r.tlb.counters();
            switch (op) {
            case 0: REQUIRE(r.host.unmap({p, p + kPage}) == 1); break;
            case 1: REQUIRE(r.host.migrate(p)); break;
            case 2: REQUIRE(r.host.protect({p, p + kPage}, false) == 1); break;
            case 3: REQUIRE(r.host.swap_out(p)); break;
            }
            const auto c1 = r.tlb.counters();
            for (std::uint32_t v = 0; v < 4; ++v) {
                CHECK_FALSE(r.tlb.probe(v, p));
                CHECK(r.tlb.probe(v, q)); // the neighbour stays
            }
            CHECK(c1.entries_dropped - c0.entries_dropped == 4);
            if (page_mode) {
                CHECK(c1.page_flushes - c0.page_flushes == 1);
                CHECK(c1.range_flushes == c0.range_flushes);
                CHECK(c1.shared_atomics == c0.shared_atomics);
            } else {
                CHECK(c1.range_flushes - c0.range_flushes == 1); // one device write for all 4 vCPUs
                CHECK(c1.page_flushes == c0.page_flushes);
                CHECK(c1.shared_atomics - c0.shared_atomics == 2); // the range-active counter, up and down
            }
            CHECK(r.tlb.range_active() == 0);
            // The next translation refills whatever the host maps now.
            for (std::uint32_t v = 0; v < 4; ++v) {
                const TlbResult t = r.tlb.translate(v, p, Access::Read);
                REQUIRE(t.status == TlbStatus::Refilled);
                CHECK(t.pfn == host_pfn(r.host, p));
                CHECK(t.writable == (op != 2));
                const std::uint8_t expect = op == 0 ? 0 : 0x5a; // unmap: a fresh zero page
                CHECK(r.frames.bytes(t.pfn)[100] == expect);
                if (op == 1) CHECK(t.pfn != before);
            }
        }
    }
}

TEST_CASE("external TLB side by side with a ShadowMmu: one migration invalidates both") {
    // Range mode only. With page_at_a_time the host calls the shadow's
    // invalidate_page holding its upper-level reader lock, and the shadow
    // takes its memslot lock there, while ShadowMmu::audit() (used by other
    // tests) takes them in the other order: ThreadSanitizer reports that
    // read-read lock-order inversion across test cases (mutex addresses are
    // reused), though neither lock is write-locked on those paths.
    for (bool page_mode : {false}) {
        CAPTURE(page_mode);
        FrameSpace frames(4096);
        HostAddressSpace host(frames, page_mode);
        ShadowMmu mmu(host, ShadowConfig{LockPolicy::Rw, CoherencePolicy::Seq, 512, 2});
        ExternalTlb tlb(host, 2, 16);
        CHECK(host.notifiers().subscriber_count() == 2);
        host.map_anonymous({kHost, kHost + 64 * kPage}, true);
        mmu.add_memslot({1, kGuest, 64 * kPage, kHost, true});
        REQUIRE(mmu.fault(0, kGuest + 7 * kPage, Access::Write) == FaultResult::Installed);
        const TlbResult t = tlb.translate(1, kHost + 7 * kPage, Access::Read);
        REQUIRE(t.ok());
        CHECK(t.pfn == X86PteFormat::pfn(mmu.entry(kGuest + 7 * kPage))); // one frame, two secondary MMUs
        const auto chain0 = host.notifiers().counters();
        REQUIRE(host.migrate(kHost + 7 * kPage));
        const auto chain1 = host.notifiers().counters();
        if (page_mode)
            CHECK(chain1.pages - chain0.pages == 2);
        else
            CHECK(chain1.starts - chain0.starts == 2); // both subscribers got the start (and the end)
        CHECK(mmu.entry(kGuest + 7 * kPage) == 0);
        CHECK_FALSE(tlb.probe(1, kHost + 7 * kPage));
        REQUIRE(mmu.fault(0, kGuest + 7 * kPage, Access::Read) == FaultResult::Installed);
        const TlbResult t2 = tlb.translate(1, kHost + 7 * kPage, Access::Read);
        REQUIRE(t2.status == TlbStatus::Refilled);
        CHECK(t2.pfn != t.pfn);
        CHECK(t2.pfn == X86PteFormat::pfn(mmu.entry(kGuest + 7 * kPage)));
        CHECK(t2.pfn == host_pfn(host, kHost + 7 * kPage));
        CHECK(mmu.audit().empty());
    }
}

TEST_CASE("external TLB aging: hits and refills set the accessed bit, then clear_young clears it in the range only") {
    Rig r;
    const HostRange p{kHost, kHost + kPage}, q{kHost + kPage, kHost + 2 * kPage};
    CHECK_FALSE(r.tlb.test_young(p));
    REQUIRE(r.tlb.translate(0, p.start, Access::Read).ok());
    REQUIRE(r.tlb.translate(2, q.start, Access::Read).ok());
    CHECK(r.tlb.test_young(p));
    CHECK(r.tlb.test_young(p)); // testing does not clear
    CHECK(r.tlb.clear_young(p));
    CHECK_FALSE(r.tlb.test_young(p));
    CHECK_FALSE(r.tlb.clear_young(p));
    CHECK(r.tlb.test_young(q)); // outside the range: untouched
    CHECK(r.tlb.probe(0, p.start)); // aging does not flush
    CHECK_FALSE(r.tlb.probe(0, p.start)->accessed);
    CHECK(r.tlb.translate(0, p.start, Access::Read).status == TlbStatus::Hit);
    CHECK(r.tlb.test_young(p)); // the hit set it again
    // Through the host: age() asks the chain, then clears the host A bits.
    CHECK(r.host.age({kHost, kHost + 2 * kPage}));
    CHECK_FALSE(r.tlb.test_young({kHost, kHost + 2 * kPage}));
    CHECK_FALSE(r.host.age({kHost, kHost + 2 * kPage}));
}

TEST_CASE("external TLB: replacement within a set, and a full-TLB flush of one vCPU") {
    Rig r(false, 1, 4); // one set of 4 ways
    for (int i = 0; i < 5; ++i) REQUIRE(r.tlb.translate(0, kHost + i * kPage, Access::Read).status == TlbStatus::Refilled);
    CHECK(r.tlb.valid_entries(0) == 4);
    CHECK(r.tlb.counters().evictions == 1);
    CHECK_FALSE(r.tlb.probe(0, kHost)); // round robin: the first way went first
    r.tlb.flush_vcpu(0);
    CHECK(r.tlb.valid_entries(0) == 0);
    Rig d(false, 1, 3); // direct mapped, 3 sets
    REQUIRE(d.tlb.translate(0, kHost, Access::Read).ok());
    REQUIRE(d.tlb.translate(0, kHost + 3 * kPage, Access::Read).ok()); // same set
    CHECK(d.tlb.valid_entries(0) == 1);
    CHECK(d.tlb.entries_per_vcpu() == 3);
}

TEST_CASE("external TLB release: everything is flushed and later translations answer NoMapping") {
    FrameSpace frames(1024);
    HostAddressSpace host(frames);
    {
        ExternalTlb tlb(host, 3, 8);
        host.map_anonymous({kHost, kHost + 16 * kPage}, true);
        for (std::uint32_t v = 0; v < 3; ++v) REQUIRE(tlb.translate(v, kHost + v * kPage, Access::Write).ok());
        host.notifiers().release();
        CHECK(tlb.released());
        for (std::uint32_t v = 0; v < 3; ++v) CHECK(tlb.valid_entries(v) == 0);
        CHECK(tlb.translate(0, kHost, Access::Read).status == TlbStatus::NoMapping);
        CHECK(tlb.counters().entries_dropped == 3);
    } // destroyed after the release: unsubscribing from a dead chain is allowed
    CHECK(host.notifiers().subscriber_count() == 0);
}
