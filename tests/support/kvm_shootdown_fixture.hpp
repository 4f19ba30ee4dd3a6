#pragma once
// Shared by test_kvm_shootdown*.cpp: the guest side of the shootdown protocol
// played in the test (nmi_handler(), Seen), a shooter thread, joiners and a
// kick recorder, over one GuestMemory with the abi.h mailbox and slots.
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

#include "hv/abi.h"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/shadow/kvm_shootdown.hpp"

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

[[maybe_unused]] std::vector<std::uint8_t> bytes(const GuestMemory& m, std::uint64_t gpa, std::size_t n) {
    std::vector<std::uint8_t> out(n);
    REQUIRE(m.read(gpa, out));
    return out;
}

} // namespace
