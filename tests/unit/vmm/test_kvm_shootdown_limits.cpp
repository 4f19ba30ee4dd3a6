// KvmShootdown (vmm/shadow/kvm_shootdown.hpp), the protocol's limits and
// ways out: page lists up to HV_SHOOTDOWN_MAX_PAGES and longer ones, stop()
// and the ack limit ending a wait nobody acknowledges,
// --unsafe-skip-shootdown, and vCPUs whose runtime is not ready. The guest
// half is played by kvm_shootdown_fixture.hpp's nmi_handler(); the protocol
// itself is in test_kvm_shootdown.cpp.
#include <doctest/doctest.h>

#include "tests/support/kvm_shootdown_fixture.hpp"

TEST_CASE("KvmShootdown: page lists up to HV_SHOOTDOWN_MAX_PAGES are listed, longer ones flush everything") {
    GuestMemory mem(kRam);
    Kicks kicks;
    KvmShootdown sd(mem, kInfo, kSlots, 1, kicks.fn(), false);
    set_ready(mem, 0, 1);
    // Canaries right after hv_shadow_info: publishing never writes past the mailbox.
    const std::uint64_t after = (kInfo + sizeof(hv_shadow_info) + 7) & ~7ull;
    for (std::uint64_t a = after; a < after + 8 * HV_SHOOTDOWN_MAX_PAGES * 2; a += 8) at(mem, a).store(0xc0ffee);

    auto shoot_and_handle = [&](std::uint64_t n) {
        Shooter s(sd, mem, 1, region_pages(1000, n));
        REQUIRE(s.finished());
        CHECK(mailbox_count(mem).load() == n);
        Seen seen;
        nmi_handler(mem, 0, seen);
        return seen;
    };
    {
        const Seen seen = shoot_and_handle(HV_SHOOTDOWN_MAX_PAGES);
        REQUIRE(seen.invlpg.size() == 1);
        CHECK(seen.invlpg[0].second == region_pages(1000, HV_SHOOTDOWN_MAX_PAGES));
        CHECK(seen.flush_all.empty());
    }
    {
        const Seen seen = shoot_and_handle(HV_SHOOTDOWN_MAX_PAGES + 1);
        CHECK(seen.invlpg.empty());
        CHECK(seen.flush_all == std::vector<std::uint64_t>{2});
    }
    {
        const Seen seen = shoot_and_handle(5000);
        CHECK(seen.invlpg.empty());
        CHECK(seen.flush_all == std::vector<std::uint64_t>{3});
    }
    {
        const Seen seen = shoot_and_handle(0); // an empty list: nothing to INVLPG, still acknowledged
        REQUIRE(seen.invlpg.size() == 1);
        CHECK(seen.invlpg[0].second.empty());
        CHECK(ack(mem, 0).load() == 4);
    }
    bool canaries = true;
    for (std::uint64_t a = after; a < after + 8 * HV_SHOOTDOWN_MAX_PAGES * 2; a += 8)
        canaries = canaries && at(mem, a).load() == 0xc0ffee;
    CHECK(canaries);
    CHECK(sd.stats().shootdowns == 4);
}

TEST_CASE("KvmShootdown: stop() releases a shooter waiting on a vCPU that never acknowledges") {
    GuestMemory mem(kRam);
    Kicks kicks;
    KvmShootdown sd(mem, kInfo, kSlots, 1, kicks.fn(), false);
    set_ready(mem, 0, 1);
    CHECK_FALSE(sd.enter_guest(0)); // this thread plays a vCPU stuck in guest mode
    {
        Shooter s(sd, mem, 1, region_pages(3, 1));
        REQUIRE(wait_for([&] { return kicks.count.load() > 0; }));
        std::this_thread::sleep_for(30ms);
        CHECK_FALSE(s.done());
        sd.stop();
        CHECK(s.finished());
        CHECK(s.ack_at_return(0) == 0);
    }
    CHECK(sd.stats().waited == 0);
    // Once stopped, later requests do not wait either.
    {
        Shooter s(sd, mem, 1, region_pages(4, 1));
        CHECK(s.finished());
    }
    CHECK(kicks.count.load() == 2);
    CHECK(sd.stats().shootdowns == 2);
    sd.leave_guest(0);
}

TEST_CASE("KvmShootdown: the ack limit ends a wait on a vCPU that never acknowledges, once, as a guest fault") {
    GuestMemory mem(kRam);
    Kicks kicks;
    KvmShootdown sd(mem, kInfo, kSlots, 1, kicks.fn(), false);
    std::mutex m;
    std::vector<std::string> faults;
    sd.set_ack_limit(50ms, [&](const std::string& why) {
        std::lock_guard lock(m);
        faults.push_back(why);
    });
    set_ready(mem, 0, 1);
    CHECK_FALSE(sd.enter_guest(0)); // a vCPU that stays in guest mode and never acknowledges
    const auto t0 = std::chrono::steady_clock::now();
    {
        Shooter s(sd, mem, 1, region_pages(3, 1));
        CHECK(s.finished()); // without the limit this waits until stop()
        CHECK(s.ack_at_return(0) == 0);
    }
    CHECK(std::chrono::steady_clock::now() - t0 >= 50ms);
    {
        std::lock_guard lock(m);
        REQUIRE(faults.size() == 1);
        CHECK(faults[0].find("vcpu 0 did not acknowledge TLB shootdown 1 within 50 ms (shootdown request=1 ack=0") == 0);
    }
    // Later requests do not wait: the VM is ending.
    {
        Shooter s(sd, mem, 1, region_pages(4, 1));
        CHECK(s.finished());
    }
    CHECK(faults.size() == 1);
    CHECK(sd.stats().abandoned == 2);
    CHECK(sd.stats().waited == 0);
    sd.leave_guest(0);
}

TEST_CASE("KvmShootdown: --unsafe-skip-shootdown sends nothing, kicks nobody and counts the skips") {
    GuestMemory mem(kRam);
    Kicks kicks;
    KvmShootdown sd(mem, kInfo, kSlots, 2, kicks.fn(), true);
    set_ready(mem, 0, 2);
    const auto slots_before = bytes(mem, kSlots, 2 * sizeof(hv_shootdown_slot));
    const auto info_before = bytes(mem, kInfo, sizeof(hv_shadow_info));
    CHECK_FALSE(sd.enter_guest(0)); // in guest mode: would be kicked without skip
    for (int i = 0; i < 3; ++i) {
        Shooter s(sd, mem, 2, region_pages(10, 2));
        CHECK(s.finished());
    }
    CHECK(kicks.count.load() == 0);
    CHECK(bytes(mem, kSlots, 2 * sizeof(hv_shootdown_slot)) == slots_before);
    CHECK(bytes(mem, kInfo, sizeof(hv_shadow_info)) == info_before);
    const hv::ShootdownStats st = sd.stats();
    CHECK(st.shootdowns == 3);
    CHECK(st.skipped == 3);
    CHECK(st.targets == 0);
    CHECK(st.waited == 0);
    CHECK(st.deferred == 0);
    CHECK(st.not_ready == 0);
    sd.leave_guest(0);
    CHECK_FALSE(sd.enter_guest(0)); // no NMI: nothing was requested
    sd.leave_guest(0);
    CHECK_FALSE(sd.enter_guest(1));
    sd.leave_guest(1);
    CHECK(sd.stats().nmis == 0);
}

TEST_CASE("KvmShootdown: a vCPU whose runtime is not ready gets no request, no kick and no NMI") {
    GuestMemory mem(kRam);
    Kicks kicks;
    KvmShootdown sd(mem, kInfo, kSlots, 2, kicks.fn(), false);
    set_ready(mem, 1); // vCPU 0 has not loaded its IDT yet
    CHECK_FALSE(sd.enter_guest(0)); // in guest mode: a ready vCPU would be kicked and waited for
    {
        Shooter s(sd, mem, 2, region_pages(1, 2));
        REQUIRE(s.finished());
    }
    CHECK(kicks.count.load() == 0);
    CHECK(request(mem, 0).load() == 0);
    CHECK(flush_all(mem, 0).load() == 0);
    CHECK(request(mem, 1).load() == 1);
    hv::ShootdownStats st = sd.stats();
    CHECK(st.not_ready == 1);
    CHECK(st.targets == 1);
    CHECK(st.deferred == 1);
    CHECK(st.waited == 0);
    sd.leave_guest(0);
    CHECK_FALSE(sd.enter_guest(0)); // nothing pending for it
    sd.leave_guest(0);

    // Once ready it gets the next request, with its list: it cached nothing before.
    set_ready(mem, 0);
    {
        Shooter s(sd, mem, 2, region_pages(3, 1));
        REQUIRE(s.finished());
    }
    CHECK(request(mem, 0).load() == 2);
    CHECK(flush_all(mem, 0).load() == 0);
    CHECK(flush_all(mem, 1).load() == 1); // vCPU 1 never acknowledged request 1
    CHECK(sd.enter_guest(0));
    Seen seen;
    nmi_handler(mem, 0, seen);
    sd.leave_guest(0);
    REQUIRE(seen.invlpg.size() == 1);
    CHECK(seen.invlpg[0].first == 2);
    CHECK(seen.invlpg[0].second == region_pages(3, 1));
    st = sd.stats();
    CHECK(st.not_ready == 1);
    CHECK(st.targets == 3);
}
