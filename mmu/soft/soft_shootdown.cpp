// Software vCPUs: the TLB shootdown protocol (requests, acknowledgements,
// entering and leaving an access) and the TLB audit. See soft_vcpu.hpp for
// the protocol; soft_vcpu.cpp has the TLB and the accesses.
#include "mmu/soft/soft_vcpu.hpp"

#include "mmu/base/defects.hpp"
#include "mmu/base/units.hpp"
#include "mmu/sync/futex.hpp"
#include "mmu/sync/sched_point.hpp"

#include <string>

namespace hv::mmu {

namespace {

using Pte = X86PteFormat;

} // namespace

void SoftVcpuSystem::honour(Vcpu& s) {
    if (!s.flush_pending.load(std::memory_order_acquire)) return;
    tlb_invalidate(s, s.pending_pages, s.pending_all);
    s.pending_pages.clear();
    s.pending_all = false;
    ++s.c.flushes_honoured;
    s.flush_pending.store(false, std::memory_order_relaxed);
    s.acked.store(s.posted, std::memory_order_release);
    futex_wake_all(s.acked);
}

void SoftVcpuSystem::check_boundary(Vcpu& s) {
    if (s.flush_pending.load(std::memory_order_acquire)) {
        std::lock_guard lock(s.m);
        honour(s);
    }
}

// Entering announces the vCPU first and then looks for requests, while
// shootdown() posts first and then looks at the announcement; both sides are
// sequentially consistent, so a request is either seen here (and honoured
// before the TLB is used) or waited for by its sender.
void SoftVcpuSystem::enter(std::uint32_t v) {
    Vcpu& s = cpu_[v];
    s.in_access.store(true, std::memory_order_seq_cst);
    sched::point(sched::Point::VcpuAnnounced); // announced, then the requests read
    if (s.flush_pending.load(std::memory_order_seq_cst)) {
        std::lock_guard lock(s.m);
        honour(s);
    }
}

// Leaving announces first and then looks for requests, the mirror image of
// enter(): a sender that saw us in access (and waits for our
// acknowledgement) posted before it looked, so we see its request here.
void SoftVcpuSystem::leave(std::uint32_t v) {
    Vcpu& s = cpu_[v];
    s.in_access.store(false, std::memory_order_seq_cst);
    if (s.flush_pending.load(std::memory_order_seq_cst)) {
        std::lock_guard lock(s.m);
        honour(s);
    }
}

void SoftVcpuSystem::shootdown(const VcpuMask& targets, std::span<const std::uint64_t> pages) {
    sd_shootdowns_.fetch_add(1, std::memory_order_relaxed);
    const bool all = pages.size() > kFlushAllThreshold;
    if (all) sd_flush_all_.fetch_add(1, std::memory_order_relaxed);
    std::vector<std::pair<std::uint32_t, std::uint32_t>> waits;
    std::uint64_t ntargets = 0, idle = 0;
    targets.for_each([&](std::uint32_t v) {
        if (v >= vcpus_) return;
        ++ntargets;
        Vcpu& s = cpu_[v];
        std::uint32_t seq = 0;
        const auto post = [&] {
            std::lock_guard lock(s.m);
            if (all || s.pending_all || s.pending_pages.size() + pages.size() > kFlushAllThreshold) {
                s.pending_all = true;
                s.pending_pages.clear();
            } else {
                s.pending_pages.insert(s.pending_pages.end(), pages.begin(), pages.end());
            }
            seq = ++s.posted;
            s.flush_pending.store(true, std::memory_order_seq_cst);
        };
        bool in_access = false;
        if (defect::kShootdownLooksBeforePosting)
            in_access = s.in_access.load(std::memory_order_seq_cst);
        else
            post();
        sched::point(sched::Point::ShootdownPosted); // posted, then the announcement read
        if (defect::kShootdownLooksBeforePosting)
            post();
        else
            in_access = s.in_access.load(std::memory_order_seq_cst);
        if (in_access)
            waits.push_back({v, seq});
        else
            ++idle; // idle, finished or inside fault(): it honours the request when it enters
    });
    sd_targets_.fetch_add(ntargets, std::memory_order_relaxed);
    sd_idle_.fetch_add(idle, std::memory_order_relaxed);
    sd_requests_.fetch_add(waits.size(), std::memory_order_relaxed);
    std::uint64_t acks = 0, deferred = 0, abandoned = 0;
    const auto started = std::chrono::steady_clock::now();
    const auto deadline = started + ack_wait_, spin_until = started + kAckSpin;
    for (const auto& [target, posted] : waits) {
        auto& acked = cpu_[target].acked;
        const std::uint32_t seq = posted; // a plain variable: lambdas cannot capture structured bindings in C++20
        const auto done = [&] { return static_cast<std::int32_t>(acked.load(std::memory_order_acquire) - seq) >= 0; };
        bool gave_up = false;
        for (;;) {
            const std::uint32_t seen = acked.load(std::memory_order_acquire);
            if (static_cast<std::int32_t>(seen - seq) >= 0) break;
            const bool unbounded = tlb_.model == TlbModel::Hardware || ack_wait_.count() == 0;
            if (sched::controlled()) {
                // The schedule fuzzer's scheduler decides when a bounded wait
                // ends; an unbounded one waits for the target to act.
                if (unbounded)
                    sched::blocked(sched::Point::AckWait);
                else if (sched::wait_timed_out(sched::Point::AckWait))
                    break;
                continue;
            }
            if (unbounded) {
                // A run past its time limit gives up: with a broken protocol
                // the target may never answer, and the run must still end.
                gave_up = abandon_waits_.load(std::memory_order_acquire);
                if (gave_up) break;
                futex_wait(acked, seen, kAbandonPoll);
                continue;
            }
            // Spin briefly, as an IPI sender does (a running target answers
            // in well under kAckSpin), then sleep for the rest of the wait so
            // a target that shares our core can run.
            const auto now = std::chrono::steady_clock::now();
            if (now >= deadline) break;
            if (now < spin_until) {
                __builtin_ia32_pause();
                continue;
            }
            futex_wait(acked, seen, std::chrono::duration_cast<std::chrono::nanoseconds>(deadline - now));
        }
        if (done()) ++acks;
        else if (gave_up) ++abandoned;
        else ++deferred;
    }
    sd_acks_.fetch_add(acks, std::memory_order_relaxed);
    sd_deferred_.fetch_add(deferred, std::memory_order_relaxed);
    sd_abandoned_.fetch_add(abandoned, std::memory_order_relaxed);
}

std::vector<std::string> SoftVcpuSystem::audit_tlbs(std::uint32_t vcpus) {
    std::vector<std::string> problems;
    for (std::uint32_t v = 0; v < vcpus; ++v) {
        Vcpu& s = cpu_[v];
        std::lock_guard lock(s.m);
        honour(s); // what the vCPU would do before its next access
        for (const TlbEntry& e : s.tlb) {
            if (e.tag == 0) continue;
            const std::uint64_t ga = (e.tag - 1) << 12;
            const std::uint64_t now = mmu_->entry(ga);
            if (!Pte::present(now) || Pte::pfn(now) != e.pfn || (e.writable && !Pte::writable(now)))
                problems.push_back("vCPU " + std::to_string(v) + " TLB maps guest " + hex(ga) + " -> frame " +
                                   hex(e.pfn) + (e.writable ? " (rw)" : " (ro)") + " but the secondary entry is " +
                                   hex(now) + " and no flush for it is pending");
        }
    }
    return problems;
}

ShootdownCounters SoftVcpuSystem::shootdown_counters() const {
    ShootdownCounters c;
    c.shootdowns = sd_shootdowns_.load();
    c.targets = sd_targets_.load();
    c.requests = sd_requests_.load();
    c.acks = sd_acks_.load();
    c.idle_requests = sd_idle_.load();
    c.flush_all = sd_flush_all_.load();
    c.deferred = sd_deferred_.load();
    c.abandoned = sd_abandoned_.load();
    return c;
}

} // namespace hv::mmu
