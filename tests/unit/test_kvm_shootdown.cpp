// KvmShootdown (vmm/kvm_shootdown.hpp): the VMM half of the TLB shootdown
// protocol of abi.h ("Shadow paging"). The guest half is played here by
// nmi_handler(), which does exactly what abi.h tells the runtime's NMI
// handler to do, and by threads that bracket a pretend KVM_RUN with
// enter_guest()/leave_guest(). Every wait is bounded, so a broken protocol
// fails the test instead of hanging the suite.
#include <doctest/doctest.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "guest_memory.hpp"
#include "hv/abi.h"
#include "kvm_shootdown.hpp"
#include "vmm_error.hpp"

using hv::GuestMemory;
using hv::KvmShootdown;
using namespace std::chrono_literals;

namespace {

constexpr std::uint64_t kRam = 8ull << 20;
constexpr std::uint64_t kInfo = HV_SHADOW_INFO;
constexpr std::uint64_t kSlots = 0x70040; // 64-byte aligned, not page aligned
constexpr std::uint64_t kMailbox = kInfo + offsetof(hv_shadow_info, mailbox);
constexpr std::uint64_t kRegion = HV_SHADOW_REGION_BASE;
constexpr auto kBound = 10s;

std::atomic_ref<std::uint64_t> at(const GuestMemory& m, std::uint64_t gpa) {
    return std::atomic_ref<std::uint64_t>(*m.word(gpa));
}
std::uint64_t slot_gpa(std::uint32_t vcpu, std::size_t field) { return kSlots + std::uint64_t{vcpu} * 64 + field; }
std::atomic_ref<std::uint64_t> request(const GuestMemory& m, std::uint32_t v) {
    return at(m, slot_gpa(v, offsetof(hv_shootdown_slot, request)));
}
std::atomic_ref<std::uint64_t> flush_all(const GuestMemory& m, std::uint32_t v) {
    return at(m, slot_gpa(v, offsetof(hv_shootdown_slot, flush_all)));
}
std::atomic_ref<std::uint64_t> ack(const GuestMemory& m, std::uint32_t v) {
    return at(m, slot_gpa(v, offsetof(hv_shootdown_slot, ack)));
}
// The runtime announces its NMI handler (abi.h: slot.ready, with a full barrier).
void set_ready(const GuestMemory& m, std::uint32_t v) {
    at(m, slot_gpa(v, offsetof(hv_shootdown_slot, ready))).store(1, std::memory_order_seq_cst);
}
void set_ready(const GuestMemory& m, std::uint32_t first, std::uint32_t n) {
    for (std::uint32_t v = first; v < first + n; ++v) set_ready(m, v);
}
std::atomic_ref<std::uint64_t> mailbox_gen(const GuestMemory& m) {
    return at(m, kMailbox + offsetof(hv_shootdown_mailbox, gen));
}
std::atomic_ref<std::uint64_t> mailbox_count(const GuestMemory& m) {
    return at(m, kMailbox + offsetof(hv_shootdown_mailbox, count));
}
std::atomic_ref<std::uint64_t> mailbox_page(const GuestMemory& m, std::uint64_t i) {
    return at(m, kMailbox + offsetof(hv_shootdown_mailbox, pages) + i * 8);
}

// What one vCPU's NMI handler did.
struct Seen {
    std::vector<std::pair<std::uint64_t, std::vector<std::uint64_t>>> invlpg; // (request, the pages INVLPGed)
    std::vector<std::uint64_t> flush_all;                                     // requests answered by a CR3 reload
    std::vector<std::uint64_t> acked;                                         // every ack written, in order
    std::uint64_t runs = 0;
};

// The runtime's NMI handler as abi.h describes it: until ack == request,
// read r = request, exchange flush_all with 0, read gen, count, the pages
// and gen again; INVLPG the pages when both gens equal r, flush_all was 0
// and count <= HV_SHOOTDOWN_MAX_PAGES, else reload CR3; then ack = r.
void nmi_handler(const GuestMemory& m, std::uint32_t v, Seen& seen) {
    ++seen.runs;
    auto nmis = at(m, slot_gpa(v, offsetof(hv_shootdown_slot, nmis)));
    nmis.store(nmis.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
    for (;;) {
        const std::uint64_t r = request(m, v).load(std::memory_order_acquire);
        if (r == ack(m, v).load(std::memory_order_relaxed)) break;
        bool all = flush_all(m, v).exchange(0, std::memory_order_acq_rel) != 0;
        const std::uint64_t g1 = mailbox_gen(m).load(std::memory_order_acquire);
        const std::uint64_t n = mailbox_count(m).load(std::memory_order_relaxed);
        std::vector<std::uint64_t> pages;
        if (all || g1 != r || n > HV_SHOOTDOWN_MAX_PAGES) {
            all = true;
        } else {
            // Acquire loads of the pages keep the second gen load after them
            // (the runtime uses an acquire fence; ThreadSanitizer builds
            // reject fences, so the test orders the loads themselves).
            for (std::uint64_t i = 0; i < n; ++i) pages.push_back(mailbox_page(m, i).load(std::memory_order_acquire));
            if (mailbox_gen(m).load(std::memory_order_relaxed) != r) all = true;
        }
        if (all) seen.flush_all.push_back(r);
        else seen.invlpg.emplace_back(r, std::move(pages));
        seen.acked.push_back(r);
        ack(m, v).store(r, std::memory_order_release);
    }
}

template <class Pred>
bool wait_for(Pred pred, std::chrono::steady_clock::duration limit = kBound) {
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (!pred()) {
        if (std::chrono::steady_clock::now() > deadline) return false;
        std::this_thread::sleep_for(50us);
    }
    return true;
}

// shootdown() on its own thread, so the test can watch it block. If it is
// still blocked when the Shooter goes away (a failed test), everything that
// may unblock it is tried before the join: stop(), leave_guest(), acks.
class Shooter {
public:
    Shooter(KvmShootdown& sd, GuestMemory& m, std::uint32_t vcpus, std::vector<std::uint64_t> pages,
            hv::mmu::VcpuMask mask = {})
        : sd_(sd), m_(m), vcpus_(vcpus), pages_(std::move(pages)), mask_(mask), acks_at_return_(vcpus),
          thread_([this] {
              sd_.shootdown(mask_, pages_);
              for (std::uint32_t v = 0; v < vcpus_; ++v) acks_at_return_[v] = ack(m_, v).load(std::memory_order_acquire);
              done_.store(true, std::memory_order_release);
          }) {}
    ~Shooter() {
        if (!wait_for([this] { return done(); }, 1s)) {
            sd_.stop();
            if (!wait_for([this] { return done(); }, 1s)) {
                for (std::uint32_t v = 0; v < vcpus_; ++v) sd_.leave_guest(v);
                for (std::uint32_t v = 0; v < vcpus_; ++v) ack(m_, v).store(~0ull);
            }
        }
        thread_.join();
    }
    bool done() const { return done_.load(std::memory_order_acquire); }
    bool finished(std::chrono::steady_clock::duration limit = kBound) const {
        return wait_for([this] { return done(); }, limit);
    }
    // The slots' ack words right after shootdown() returned (valid once done()).
    std::uint64_t ack_at_return(std::uint32_t v) const { return acks_at_return_.at(v); }

private:
    KvmShootdown& sd_;
    GuestMemory& m_;
    std::uint32_t vcpus_;
    std::vector<std::uint64_t> pages_;
    hv::mmu::VcpuMask mask_;
    std::vector<std::uint64_t> acks_at_return_;
    std::atomic<bool> done_{false};
    std::thread thread_; // last: starts once everything above exists
};

// A thread that is always joined, after `quit` is set, even when a REQUIRE
// leaves the test early.
class Joiner {
public:
    Joiner(std::atomic<bool>& quit, std::thread t) : quit_(quit), t_(std::move(t)) {}
    ~Joiner() { join(); }
    void join() {
        quit_.store(true);
        if (t_.joinable()) t_.join();
    }

private:
    std::atomic<bool>& quit_;
    std::thread t_;
};

// Records which vCPUs were kicked.
struct Kicks {
    std::mutex mutex;
    std::vector<std::uint32_t> list;
    std::atomic<int> count{0};
    KvmShootdown::Kick fn() {
        return [this](std::uint32_t v) {
            std::lock_guard lock(mutex);
            list.push_back(v);
            count.fetch_add(1);
        };
    }
    std::vector<std::uint32_t> snapshot() {
        std::lock_guard lock(mutex);
        return list;
    }
};

std::vector<std::uint64_t> region_pages(std::uint64_t first, std::uint64_t n) {
    std::vector<std::uint64_t> v;
    for (std::uint64_t i = 0; i < n; ++i) v.push_back(kRegion + (first + i) * 0x1000);
    return v;
}

std::vector<std::uint8_t> bytes(const GuestMemory& m, std::uint64_t gpa, std::size_t n) {
    std::vector<std::uint8_t> out(n);
    REQUIRE(m.read(gpa, out));
    return out;
}

} // namespace

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

    // The next entry asks for the NMI, exactly once.
    CHECK(sd.enter_guest(0));
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
