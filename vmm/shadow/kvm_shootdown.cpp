#include "vmm/shadow/kvm_shootdown.hpp"

#include "mmu/base/units.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <hv/abi.h>

#include <cstddef>
#include <thread>

namespace hv {
namespace {
using mmu::at;

using Clock = std::chrono::steady_clock;


} // namespace

KvmShootdown::KvmShootdown(GuestMemory& memory, std::uint64_t info, std::uint64_t slots, std::uint32_t vcpus, Kick kick,
                           bool skip)
    : memory_(memory), info_(info), slots_(slots), vcpus_(vcpus), kick_(std::move(kick)), skip_(skip),
      gates_(std::make_unique<Gate[]>(vcpus)) {
    if (!memory.contains(info, sizeof(hv_shadow_info)) || info % 64 ||
        !memory.contains(slots, std::uint64_t{vcpus} * sizeof(hv_shootdown_slot)) || slots % 64)
        throw VmmError("shootdown mailbox or slots outside guest RAM or not 64-byte aligned");
}

std::uint64_t* KvmShootdown::slot_word(std::uint32_t vcpu, std::size_t offset) const {
    return memory_.word(slots_ + std::uint64_t{vcpu} * sizeof(hv_shootdown_slot) + offset);
}

// The seqlock writer of abi.h: count and pages first, gen last (release),
// so a guest that reads gen, the list, and gen again sees a whole list or
// notices the change.
void KvmShootdown::publish(std::uint64_t gen, std::span<const std::uint64_t> pages) {
    const std::uint64_t mailbox = info_ + offsetof(hv_shadow_info, mailbox);
    const std::uint64_t count = pages.size();
    // gen = 0 first ("being rewritten"); each later store is a release, so
    // it cannot become visible before that.
    at(memory_.word(mailbox + offsetof(hv_shootdown_mailbox, gen))).store(0, std::memory_order_relaxed);
    at(memory_.word(mailbox + offsetof(hv_shootdown_mailbox, count))).store(count, std::memory_order_release);
    const std::size_t listed = count <= HV_SHOOTDOWN_MAX_PAGES ? pages.size() : 0;
    for (std::size_t i = 0; i < listed; ++i)
        at(memory_.word(mailbox + offsetof(hv_shootdown_mailbox, pages) + i * 8)).store(pages[i], std::memory_order_release);
    at(memory_.word(mailbox + offsetof(hv_shootdown_mailbox, gen))).store(gen, std::memory_order_release);
}

void KvmShootdown::shootdown(const mmu::VcpuMask&, std::span<const std::uint64_t> pages) {
    std::unique_lock lock(mutex_);
    bump(stats_.shootdowns);
    if (skip_) {
        bump(stats_.skipped);
        return;
    }
    const std::uint64_t gen = ++gen_;
    publish(gen, pages);
    constexpr std::size_t kRequest = offsetof(hv_shootdown_slot, request);
    constexpr std::size_t kFlushAll = offsetof(hv_shootdown_slot, flush_all);
    constexpr std::size_t kAck = offsetof(hv_shootdown_slot, ack);
    kicked_.clear();
    constexpr std::size_t kReady = offsetof(hv_shootdown_slot, ready);
    for (std::uint32_t v = 0; v < vcpus_; ++v) {
        // A vCPU whose runtime is not ready has cached nothing of the region
        // and could not take the NMI (no IDT yet). The zap's exchange before
        // this load and the guest's barrier after its store make it see
        // either ready or the cleared entries.
        if (at(slot_word(v, kReady)).load(std::memory_order_seq_cst) == 0) {
            bump(stats_.not_ready);
            continue;
        }
        // An unacknowledged older request means this vCPU never saw that
        // request's page list, which the mailbox no longer holds.
        const std::uint64_t old = at(slot_word(v, kRequest)).load(std::memory_order_relaxed);
        if (old != at(slot_word(v, kAck)).load(std::memory_order_acquire))
            at(slot_word(v, kFlushAll)).store(1, std::memory_order_relaxed);
        at(slot_word(v, kRequest)).store(gen, std::memory_order_release);
        Gate& g = gates_[v];
        g.pending.store(gen, std::memory_order_seq_cst);
        bump(stats_.targets);
        if (g.in_guest.load(std::memory_order_seq_cst)) {
            kick_(v);
            kicked_.push_back(v);
        } else {
            bump(stats_.deferred);
        }
    }
    if (kicked_.empty()) return;
    const auto t0 = Clock::now();
    for (std::uint32_t v : kicked_) wait_ack(v, gen);
    const auto ns = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
    bump(stats_.wait_ns, ns);
    if (ns > stats_.max_wait_ns.load(std::memory_order_relaxed)) stats_.max_wait_ns.store(ns, std::memory_order_relaxed);
}

// Until the guest acknowledged `gen`, or the vCPU left guest mode (it then
// sees the request on entry), or the VM ends. Spin briefly, then yield: the
// acknowledging vCPU thread may need this core to run.
void KvmShootdown::wait_ack(std::uint32_t vcpu, std::uint64_t gen) {
    Gate& g = gates_[vcpu];
    std::uint64_t* ack = slot_word(vcpu, offsetof(hv_shootdown_slot, ack));
    const auto t0 = Clock::now();
    for (unsigned spins = 0;; ++spins) {
        if (at(ack).load(std::memory_order_acquire) >= gen) break;
        if (!g.in_guest.load(std::memory_order_seq_cst)) {
            bump(stats_.deferred);
            return;
        }
        if (stopping_.load(std::memory_order_acquire)) {
            bump(stats_.abandoned);
            return;
        }
        if (spins < 256) __builtin_ia32_pause();
        else if (spins < 4096) std::this_thread::yield();
        else std::this_thread::sleep_for(std::chrono::microseconds(20));
        if (spins % 4096 == 4095 && ack_limit_.count() > 0 && Clock::now() - t0 > ack_limit_) {
            give_up(vcpu, gen);
            return;
        }
    }
    bump(stats_.waited);
}

void KvmShootdown::give_up(std::uint32_t vcpu, std::uint64_t gen) {
    const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(ack_limit_).count();
    const std::string why = "vcpu " + std::to_string(vcpu) + " did not acknowledge TLB shootdown " +
                            std::to_string(gen) + " within " + std::to_string(ms) + " ms (" + describe(vcpu) + ")";
    bump(stats_.abandoned);
    if (!stopping_.exchange(true, std::memory_order_acq_rel) && unacknowledged_) unacknowledged_(why);
}

void KvmShootdown::set_ack_limit(std::chrono::nanoseconds limit, Unacknowledged fault) {
    ack_limit_ = limit;
    unacknowledged_ = std::move(fault);
}

bool KvmShootdown::enter_guest(std::uint32_t vcpu) {
    Gate& g = gates_[vcpu];
    g.in_guest.store(true, std::memory_order_seq_cst);
    const std::uint64_t pending = g.pending.load(std::memory_order_seq_cst);
    if (pending == g.injected) return false;
    g.injected = pending;
    g.nmis.fetch_add(1, std::memory_order_relaxed);
    return true;
}

void KvmShootdown::leave_guest(std::uint32_t vcpu) { gates_[vcpu].in_guest.store(false, std::memory_order_seq_cst); }

std::string KvmShootdown::describe(std::uint32_t vcpu) const {
    auto word = [&](std::size_t offset) { return at(slot_word(vcpu, offset)).load(std::memory_order_acquire); };
    const Gate& g = gates_[vcpu];
    return "shootdown request=" + std::to_string(word(offsetof(hv_shootdown_slot, request))) +
           " ack=" + std::to_string(word(offsetof(hv_shootdown_slot, ack))) +
           " nmis=" + std::to_string(word(offsetof(hv_shootdown_slot, nmis))) +
           " ready=" + std::to_string(word(offsetof(hv_shootdown_slot, ready))) +
           " pending=" + std::to_string(g.pending.load(std::memory_order_acquire)) +
           " injected=" + std::to_string(g.injected) + (g.in_guest.load() ? " in-guest" : "");
}

void KvmShootdown::stop() { stopping_.store(true, std::memory_order_release); }

ShootdownStats KvmShootdown::stats() const {
    auto get = [](const std::atomic<std::uint64_t>& c) { return c.load(std::memory_order_relaxed); };
    ShootdownStats s;
    s.shootdowns = get(stats_.shootdowns);
    s.targets = get(stats_.targets);
    s.waited = get(stats_.waited);
    s.deferred = get(stats_.deferred);
    s.skipped = get(stats_.skipped);
    s.not_ready = get(stats_.not_ready);
    s.abandoned = get(stats_.abandoned);
    s.wait_ns = get(stats_.wait_ns);
    s.max_wait_ns = get(stats_.max_wait_ns);
    for (std::uint32_t v = 0; v < vcpus_; ++v) s.nmis += gates_[v].nmis.load(std::memory_order_relaxed);
    return s;
}

} // namespace hv
