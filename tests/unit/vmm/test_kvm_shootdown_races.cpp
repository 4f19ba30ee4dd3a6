// KvmShootdown: construction checks, the mailbox seqlock under a concurrent
// rewriter, and a stress run of the whole protocol (see test_kvm_shootdown.cpp).
#include <doctest/doctest.h>

#include "tests/support/kvm_shootdown_fixture.hpp"

TEST_CASE("KvmShootdown: the constructor rejects a mailbox or slots outside RAM or misaligned") {
    GuestMemory mem(kRam);
    auto make = [&](std::uint64_t info, std::uint64_t slots, std::uint32_t vcpus) {
        KvmShootdown sd(mem, info, slots, vcpus, [](std::uint32_t) {}, false);
    };
    CHECK_NOTHROW(make(kInfo, kSlots, 4));
    CHECK_NOTHROW(make(kInfo + 64, kSlots, 4));                      // 64-byte alignment is enough
    CHECK_NOTHROW(make(kInfo, kRam - 4 * 64, 4));                    // slots end exactly at the end of RAM
    const std::uint64_t last_info = (kRam - sizeof(hv_shadow_info)) & ~63ull; // the highest aligned mailbox
    CHECK_NOTHROW(make(last_info, kSlots, 1));
    CHECK_THROWS_AS(make(last_info + 64, kSlots, 1), hv::VmmError); // its end runs past RAM
    CHECK_THROWS_AS(make(kInfo, kRam - 3 * 64, 4), hv::VmmError);    // the last slot runs past RAM
    CHECK_THROWS_AS(make(kInfo, kRam, 1), hv::VmmError);
    CHECK_THROWS_AS(make(kInfo, ~0ull & ~63ull, 1), hv::VmmError);    // no wrap-around
    CHECK_THROWS_AS(make(kRam - 64, kSlots, 1), hv::VmmError);         // the mailbox runs past RAM
    CHECK_THROWS_AS(make(kRam, kSlots, 1), hv::VmmError);
    CHECK_THROWS_AS(make(~0ull & ~63ull, kSlots, 1), hv::VmmError);
    CHECK_THROWS_AS(make(kInfo + 8, kSlots, 1), hv::VmmError);         // misaligned mailbox
    CHECK_THROWS_AS(make(kInfo + 32, kSlots, 1), hv::VmmError);
    CHECK_THROWS_AS(make(kInfo, kSlots + 8, 1), hv::VmmError);         // misaligned slots
    CHECK_THROWS_AS(make(kInfo, kSlots + 32, 1), hv::VmmError);
    std::string message;
    try {
        make(kInfo, kRam, 1);
    } catch (const hv::VmmError& e) {
        message = e.what();
    }
    CHECK(message.find("slots") != std::string::npos);
}

TEST_CASE("KvmShootdown: the mailbox seqlock - a reader never accepts a list being rewritten") {
    // vCPU 0 is ready and outside guest mode, so requests follow each other
    // without waiting while a thread reads the mailbox as the handler does
    // (request, gen, count, pages, gen) over and over, without acknowledging.
    constexpr std::uint64_t kShots = 60000;
    GuestMemory mem(kRam);
    Kicks kicks;
    KvmShootdown sd(mem, kInfo, kSlots, 1, kicks.fn(), false);
    set_ready(mem, 0, 1);
    auto list_for = [](std::uint64_t gen) { return region_pages(gen * 128, 64 + gen % 64); };
    // One read as abi.h's handler does it: the list, or nothing when it cannot be trusted.
    auto read_list = [&](std::uint64_t& r, std::vector<std::uint64_t>& pages) {
        r = request(mem, 0).load(std::memory_order_acquire);
        const std::uint64_t g1 = mailbox_gen(mem).load(std::memory_order_acquire);
        const std::uint64_t n = mailbox_count(mem).load(std::memory_order_relaxed);
        if (r == 0 || g1 != r || n > HV_SHOOTDOWN_MAX_PAGES) return false;
        pages.clear();
        for (std::uint64_t i = 0; i < n; ++i) pages.push_back(mailbox_page(mem, i).load(std::memory_order_acquire));
        return mailbox_gen(mem).load(std::memory_order_relaxed) == r;
    };
    std::atomic<bool> quit{false};
    std::uint64_t accepted = 0, torn = 0, first_torn = 0;
    Joiner reader(quit, std::thread([&] {
        std::vector<std::uint64_t> pages;
        std::uint64_t r = 0;
        while (!quit.load(std::memory_order_relaxed)) {
            if (!read_list(r, pages)) continue;
            ++accepted;
            if (pages != list_for(r) && torn++ == 0) first_torn = r;
        }
    }));
    std::atomic<bool> writer_done{false};
    std::thread writer([&] {
        hv::mmu::VcpuMask none;
        for (std::uint64_t gen = 1; gen <= kShots && !quit.load(); ++gen) sd.shootdown(none, list_for(gen));
        writer_done = true;
    });
    const bool finished = wait_for([&] { return writer_done.load(); }, 60s);
    if (!finished) quit = true;
    writer.join();
    reader.join();
    REQUIRE(finished);
    CAPTURE(accepted);
    CAPTURE(first_torn);
    CHECK(torn == 0);
    // At rest the last list reads back whole.
    std::uint64_t r = 0;
    std::vector<std::uint64_t> pages;
    REQUIRE(read_list(r, pages));
    CHECK(r == kShots);
    CHECK(pages == list_for(kShots));
    CHECK(kicks.count.load() == 0);
}

TEST_CASE("KvmShootdown: stress - no vCPU runs guest code with a request older than a finished shootdown") {
    // Three vCPU threads enter and leave guest mode; a kick makes the
    // pretend KVM_RUN return; an entry that asks for an NMI runs the handler
    // before any guest code. In guest code each vCPU checks that every
    // shootdown that has returned is acknowledged by it, and every list its
    // handler read must be the one published for that request.
    constexpr std::uint32_t kVcpus = 3;
    constexpr std::uint64_t kShots = 400;
    GuestMemory mem(kRam);
    std::atomic<bool> kicked[kVcpus] = {};
    KvmShootdown sd(mem, kInfo, kSlots, kVcpus, [&](std::uint32_t v) { kicked[v].store(true); }, false);
    set_ready(mem, 0, kVcpus);
    auto list_for = [](std::uint64_t gen) {
        if (gen % 50 == 0) return region_pages(gen, HV_SHOOTDOWN_MAX_PAGES + 3); // flush-all requests
        return region_pages(gen * 16, gen % 7);
    };
    std::atomic<std::uint64_t> returned{0};
    std::atomic<bool> quit{false};
    Seen seen[kVcpus];
    std::uint64_t violations[kVcpus] = {}, entries[kVcpus] = {};
    std::atomic<std::uint32_t> started{0};
    std::vector<std::unique_ptr<Joiner>> vcpus;
    for (std::uint32_t v = 0; v < kVcpus; ++v)
        vcpus.push_back(std::make_unique<Joiner>(quit, std::thread([&, v] {
            for (std::uint64_t round = 0; !quit.load(); ++round) {
                if (++entries[v] == 1) started.fetch_add(1);
                if (sd.enter_guest(v)) nmi_handler(mem, v, seen[v]);
                for (int i = 0; i < 200 && !quit.load(); ++i) {
                    const std::uint64_t r = returned.load(std::memory_order_seq_cst);
                    if (ack(mem, v).load(std::memory_order_acquire) < r) ++violations[v];
                    if (kicked[v].exchange(false)) break; // KVM_RUN returns
                    std::this_thread::yield();
                }
                sd.leave_guest(v);
                if (round % 4 == v) std::this_thread::yield(); // some time outside guest mode
            }
        })));
    std::atomic<bool> shooter_done{false};
    std::thread shooter([&] {
        hv::mmu::VcpuMask none;
        wait_for([&] { return started.load() == kVcpus || quit.load(); }); // every vCPU thread runs
        for (std::uint64_t gen = 1; gen <= kShots && !quit.load(); ++gen) {
            const auto pages = list_for(gen);
            sd.shootdown(none, pages);
            returned.store(gen, std::memory_order_seq_cst);
            if (gen % 2) std::this_thread::yield(); // let the vCPUs interleave with the requests
        }
        shooter_done = true;
    });
    const bool finished = wait_for([&] { return shooter_done.load(); }, 60s);
    if (!finished) sd.stop();
    shooter.join();
    for (auto& j : vcpus) j->join();
    REQUIRE(finished);

    const hv::ShootdownStats st = sd.stats();
    CHECK(st.shootdowns == kShots);
    CHECK(st.targets == kShots * kVcpus);
    CHECK(st.waited + st.deferred == kShots * kVcpus);
    CHECK(st.not_ready == 0);
    for (std::uint32_t v = 0; v < kVcpus; ++v) {
        CAPTURE(v);
        CHECK(violations[v] == 0);
        CHECK(entries[v] > 0);
        // Acks only move forward; every listed flush is the list of its request.
        // Oversized requests never come through as lists.
        bool ordered = true, lists_match = true, oversized_listed = false;
        for (std::size_t i = 1; i < seen[v].acked.size(); ++i) ordered = ordered && seen[v].acked[i] > seen[v].acked[i - 1];
        for (const auto& [r, pages] : seen[v].invlpg) {
            lists_match = lists_match && pages == list_for(r);
            oversized_listed = oversized_listed || r % 50 == 0;
        }
        CHECK(ordered);
        CHECK(lists_match);
        CHECK_FALSE(oversized_listed);
        // One last entry catches up with whatever is still pending.
        if (sd.enter_guest(v)) nmi_handler(mem, v, seen[v]);
        sd.leave_guest(v);
        CHECK(ack(mem, v).load() == kShots);
    }
}
