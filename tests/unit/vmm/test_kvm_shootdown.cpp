// KvmShootdown (vmm/shadow/kvm_shootdown.hpp): the VMM half of the TLB shootdown
// protocol of abi.h ("Shadow paging"). The guest half is played here by
// nmi_handler(), which does exactly what abi.h tells the runtime's NMI
// handler to do, and by threads that bracket a pretend KVM_RUN with
// enter_guest()/leave_guest(). Every wait is bounded, so a broken protocol
// fails the test instead of hanging the suite. Here: waiting, deferring and
// acknowledging; the page list's limit, stop(), the ack limit, skipping and
// runtimes not ready are in test_kvm_shootdown_limits.cpp, racing threads in
// test_kvm_shootdown_races.cpp.
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
