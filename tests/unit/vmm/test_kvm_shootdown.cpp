// KvmShootdown (vmm/shadow/kvm_shootdown.hpp): the VMM half of the TLB shootdown
// protocol of abi.h ("Shadow paging"). The guest half is played here by
// nmi_handler(), which does exactly what abi.h tells the runtime's NMI
// handler to do, and by threads that bracket a pretend KVM_RUN with
// enter_guest()/leave_guest(). Every wait is bounded, so a broken protocol
// fails the test instead of hanging the suite.
#include <doctest/doctest.h>

#include "tests/support/kvm_shootdown_fixture.hpp"

TEST_CASE("KvmShootdown: a vCPU outside guest mode is not waited for and gets its NMI on the next entry") {
    GuestMemory mem(kRam);
    Kicks kicks;
    KvmShootdown sd(mem, kInfo, kSlots, 2, kicks.fn(), false);
    set_ready(mem, 0, 2);
    const auto pages = region_pages(5, 3);
    // The MMU's target mask does not narrow a KVM shootdown: every vCPU gets it.
    hv::mmu::VcpuMask only_1;
    only_1.set(1);
    {
        Shooter s(sd, mem, 2, pages, only_1);
        REQUIRE(s.finished());
    }
    CHECK(kicks.count.load() == 0);
    const hv::ShootdownStats st = sd.stats();
    CHECK(st.shootdowns == 1);
    CHECK(st.targets == 2);
    CHECK(st.deferred == 2);
    CHECK(st.waited == 0);
    CHECK(st.skipped == 0);
    CHECK(st.not_ready == 0);
    CHECK(st.nmis == 0);
    CHECK(st.wait_ns == 0);
    // The request is published for both vCPUs, the mailbox holds the pages.
    CHECK(request(mem, 0).load() == 1);
    CHECK(request(mem, 1).load() == 1);
    CHECK(flush_all(mem, 0).load() == 0);
    CHECK(ack(mem, 0).load() == 0);
    CHECK(mailbox_gen(mem).load() == 1);
    CHECK(mailbox_count(mem).load() == 3);
    for (std::uint64_t i = 0; i < 3; ++i) CHECK(mailbox_page(mem, i).load() == pages[i]);

    // What a stopped VM's report says about each vCPU at this point.
    CHECK(sd.describe(0) == "shootdown request=1 ack=0 nmis=0 ready=1 pending=1 injected=0");
    CHECK(sd.describe(1) == "shootdown request=1 ack=0 nmis=0 ready=1 pending=1 injected=0");

    // The next entry asks for the NMI, exactly once.
    CHECK(sd.enter_guest(0));
    CHECK(sd.describe(0) == "shootdown request=1 ack=0 nmis=0 ready=1 pending=1 injected=1 in-guest");
    sd.leave_guest(0);
    CHECK_FALSE(sd.enter_guest(0));
    sd.leave_guest(0);
    CHECK_FALSE(sd.enter_guest(0));
    sd.leave_guest(0);
    CHECK(sd.stats().nmis == 1);
    CHECK(sd.enter_guest(1));
    sd.leave_guest(1);
    CHECK(sd.stats().nmis == 2);

    Seen seen;
    nmi_handler(mem, 0, seen);
    REQUIRE(seen.invlpg.size() == 1);
    CHECK(seen.invlpg[0].first == 1);
    CHECK(seen.invlpg[0].second == pages);
    CHECK(seen.flush_all.empty());
    CHECK(ack(mem, 0).load() == 1);
    CHECK(sd.describe(0) == "shootdown request=1 ack=1 nmis=1 ready=1 pending=1 injected=1");

    // A second request: the NMI is needed once more.
    {
        Shooter s(sd, mem, 2, region_pages(9, 1));
        REQUIRE(s.finished());
    }
    CHECK(sd.enter_guest(0));
    sd.leave_guest(0);
    CHECK_FALSE(sd.enter_guest(0));
    sd.leave_guest(0);
    CHECK(sd.stats().shootdowns == 2);
    CHECK(sd.stats().deferred == 4);
}

TEST_CASE("KvmShootdown: a vCPU in guest mode is kicked and waited for until its handler acknowledges") {
    GuestMemory mem(kRam);
    Kicks kicks;
    KvmShootdown sd(mem, kInfo, kSlots, 2, kicks.fn(), false);
    set_ready(mem, 0, 2);
    const auto pages = region_pages(100, 4);

    std::atomic<bool> entered{false}, release{false}, handled{false}, quit{false};
    std::atomic<bool> nmi_on_entry{true};
    Seen seen;
    Joiner vcpu(quit, std::thread([&] {
        nmi_on_entry = sd.enter_guest(0);
        entered = true;
        // In guest mode: the NMI arrives (the kick), the handler runs when
        // the test lets it, and the vCPU stays in guest mode throughout.
        wait_for([&] { return (kicks.count.load() > 0 && release.load()) || quit.load(); });
        if (!quit.load()) {
            nmi_handler(mem, 0, seen);
            handled = true;
        }
        wait_for([&] { return quit.load(); });
        sd.leave_guest(0);
    }));
    REQUIRE(wait_for([&] { return entered.load(); }));
    {
        Shooter s(sd, mem, 2, pages);
        REQUIRE(wait_for([&] { return kicks.count.load() > 0; }));
        // Give a shooter that does not wait every chance to return early.
        std::this_thread::sleep_for(30ms);
        CHECK_FALSE(s.done());
        release = true;
        REQUIRE(s.finished());
        CHECK(s.ack_at_return(0) == 1); // it returned after the acknowledgement, not before
        CHECK(s.ack_at_return(1) == 0); // vCPU 1 was not waited for
    }
    CHECK(wait_for([&] { return handled.load(); }));
    vcpu.join();

    CHECK_FALSE(nmi_on_entry.load()); // nothing was pending at entry
    CHECK(kicks.snapshot() == std::vector<std::uint32_t>{0});
    REQUIRE(seen.invlpg.size() == 1);
    CHECK(seen.invlpg[0].first == 1);
    CHECK(seen.invlpg[0].second == pages);
    CHECK(seen.flush_all.empty());
    CHECK(seen.acked == std::vector<std::uint64_t>{1});
    const hv::ShootdownStats st = sd.stats();
    CHECK(st.shootdowns == 1);
    CHECK(st.targets == 2);
    CHECK(st.waited == 1);
    CHECK(st.deferred == 1);
    CHECK(st.wait_ns > 0);
    CHECK(st.max_wait_ns == st.wait_ns);
    // The request is acknowledged: whatever the next entry asks for, the
    // handler finds ack == request and acknowledges nothing again.
    Seen again;
    if (sd.enter_guest(0)) nmi_handler(mem, 0, again);
    sd.leave_guest(0);
    CHECK(again.acked.empty());
    CHECK_FALSE(sd.enter_guest(0));
    sd.leave_guest(0);
}

TEST_CASE("KvmShootdown: a kicked vCPU that leaves guest mode releases the shooter without an ack") {
    GuestMemory mem(kRam);
    Kicks kicks;
    KvmShootdown sd(mem, kInfo, kSlots, 1, kicks.fn(), false);
    set_ready(mem, 0, 1);
    const auto pages = region_pages(7, 2);

    std::atomic<bool> entered{false}, release{false}, left{false}, quit{false};
    Joiner vcpu(quit, std::thread([&] {
        sd.enter_guest(0);
        entered = true;
        // The kick makes KVM_RUN return: leave guest mode without running the handler.
        wait_for([&] { return (kicks.count.load() > 0 && release.load()) || quit.load(); });
        sd.leave_guest(0);
        left = true;
        wait_for([&] { return quit.load(); });
    }));
    REQUIRE(wait_for([&] { return entered.load(); }));
    {
        Shooter s(sd, mem, 1, pages);
        REQUIRE(wait_for([&] { return kicks.count.load() > 0; }));
        std::this_thread::sleep_for(30ms);
        CHECK_FALSE(s.done()); // still in guest mode, not acknowledged: the shooter waits
        release = true;
        REQUIRE(s.finished());
        CHECK(s.ack_at_return(0) == 0);
    }
    CHECK(wait_for([&] { return left.load(); }));
    vcpu.join();
    const hv::ShootdownStats st = sd.stats();
    CHECK(st.targets == 1);
    CHECK(st.waited == 0);
    CHECK(st.deferred == 1);
    CHECK(ack(mem, 0).load() == 0);
    // The vCPU flushes before it runs guest code again.
    CHECK(sd.enter_guest(0));
    Seen seen;
    nmi_handler(mem, 0, seen);
    sd.leave_guest(0);
    REQUIRE(seen.invlpg.size() == 1);
    CHECK(seen.invlpg[0].second == pages);
    CHECK(ack(mem, 0).load() == 1);
    CHECK_FALSE(sd.enter_guest(0));
    sd.leave_guest(0);
}

TEST_CASE("KvmShootdown: an unacknowledged older request makes the next one flush everything") {
    GuestMemory mem(kRam);
    Kicks kicks;
    KvmShootdown sd(mem, kInfo, kSlots, 2, kicks.fn(), false);
    set_ready(mem, 0, 2);
    {
        Shooter s(sd, mem, 2, region_pages(1, 1));
        REQUIRE(s.finished());
    }
    CHECK(flush_all(mem, 0).load() == 0);
    // vCPU 1 acknowledges request 1; vCPU 0 does not.
    Seen seen1;
    nmi_handler(mem, 1, seen1);
    REQUIRE(ack(mem, 1).load() == 1);
    {
        Shooter s(sd, mem, 2, region_pages(2, 1));
        REQUIRE(s.finished());
    }
    // The mailbox lost request 1's list: vCPU 0 must flush everything.
    CHECK(request(mem, 0).load() == 2);
    CHECK(flush_all(mem, 0).load() == 1);
    CHECK(flush_all(mem, 1).load() == 0);
    CHECK(mailbox_gen(mem).load() == 2);
    CHECK(mailbox_count(mem).load() == 1);
    CHECK(mailbox_page(mem, 0).load() == region_pages(2, 1)[0]);

    Seen seen0;
    nmi_handler(mem, 0, seen0);
    CHECK(seen0.invlpg.empty());
    CHECK(seen0.flush_all == std::vector<std::uint64_t>{2});
    CHECK(flush_all(mem, 0).load() == 0);
    CHECK(ack(mem, 0).load() == 2);
    nmi_handler(mem, 1, seen1);
    REQUIRE(seen1.invlpg.size() == 2);
    CHECK(seen1.invlpg[1].second == region_pages(2, 1));

    // Both acknowledged: the next request lists its pages again.
    {
        Shooter s(sd, mem, 2, region_pages(3, 2));
        REQUIRE(s.finished());
    }
    CHECK(flush_all(mem, 0).load() == 0);
    CHECK(flush_all(mem, 1).load() == 0);
    Seen seen2;
    nmi_handler(mem, 0, seen2);
    REQUIRE(seen2.invlpg.size() == 1);
    CHECK(seen2.invlpg[0].second == region_pages(3, 2));
    CHECK(seen2.flush_all.empty());
    CHECK(kicks.count.load() == 0);
}

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

