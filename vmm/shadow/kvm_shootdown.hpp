#pragma once
// TLB shootdowns to KVM vCPUs: the VMM half of the protocol in abi.h
// ("Shadow paging"). The guest half is the runtime's NMI handler.
//
// A KVM vCPU's TLB is filled by the CPU's own page walks, which the VMM never
// sees, so any vCPU may cache any entry of the shadow tables: every request
// goes to every vCPU (as KVM's own remote TLB flush does), whatever the
// MMU's per-table target mask says.
//
// Each vCPU thread brackets KVM_RUN with enter_guest()/leave_guest(). A
// request is recorded as pending for every vCPU; a vCPU in guest mode is
// kicked out of KVM_RUN (the Kick callback) and re-enters with an NMI
// queued, and shootdown() waits for its acknowledgement. A vCPU outside guest
// mode (handling an exit, halted, blocked in a fault that waits for this very
// invalidation) is not waited for: enter_guest() sees the pending request
// before it runs guest code and asks for the NMI, which the CPU delivers
// before the first guest instruction. The in_guest flag and the pending
// generation are written and read sequentially consistently, so either the
// shooter sees the vCPU in guest mode (and waits), or the vCPU sees the
// request (and flushes first).
//
// A vCPU is a target only once its guest runtime set slot.ready (abi.h):
// before that it has no IDT to take the NMI with and caches nothing of the
// region.
//
// No KVM calls here: the Kick callback and the caller of enter_guest() do
// them, so unit tests drive the protocol with threads playing the guest.
#include "mmu/secondary/shadow_mmu.hpp"
#include "vmm/kvm/guest_memory.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace hv {

// How long `vmm run` waits for one vCPU's acknowledgement before it ends
// the VM as a guest fault: far above the slowest acknowledgement seen
// (docs/results.md, KVM), far below any test's time limit.
inline constexpr std::chrono::seconds kShootdownAckLimit{20};

struct ShootdownStats {
    std::uint64_t shootdowns = 0;   // requests sent (one per zap batch)
    std::uint64_t targets = 0;      // vCPUs a request was recorded for
    std::uint64_t waited = 0;       // ... of which were in guest mode: kicked, acknowledgement awaited
    std::uint64_t deferred = 0;     // ... of which were outside guest mode: flushed on their next entry
    std::uint64_t not_ready = 0;    // vCPUs skipped: their runtime had not announced its NMI handler yet
    std::uint64_t abandoned = 0;    // waits ended by stop() (the VM was ending) or the ack limit
    std::uint64_t nmis = 0;         // NMIs queued by enter_guest()
    std::uint64_t skipped = 0;      // requests dropped by --unsafe-skip-shootdown
    std::uint64_t wait_ns = 0, max_wait_ns = 0; // time shootdown() spent waiting for acknowledgements
};

class KvmShootdown final : public mmu::TlbShootdown {
public:
    using Kick = std::function<void(std::uint32_t vcpu)>; // make KVM_RUN of that vCPU return soon
    // `info` and `slots` are the guest-physical addresses of hv_shadow_info
    // and of hv_shootdown_slot[vcpus]; both must lie in RAM (throws VmmError).
    KvmShootdown(GuestMemory& memory, std::uint64_t info, std::uint64_t slots, std::uint32_t vcpus, Kick kick,
                 bool skip);

    void shootdown(const mmu::VcpuMask& targets, std::span<const std::uint64_t> pages) override;

    // vCPU thread, right before KVM_RUN: the vCPU counts as in guest mode
    // from here on. True when an NMI must be queued (KVM_NMI) first.
    bool enter_guest(std::uint32_t vcpu);
    // vCPU thread, right after KVM_RUN returned.
    void leave_guest(std::uint32_t vcpu);
    // The VM is ending: stop waiting for acknowledgements, now and later.
    void stop();
    // A guest that never acknowledges (its NMI handler hangs, or it wrote
    // its own slot) must not hold the zap, and every fault behind it,
    // forever: a wait longer than `limit` calls `fault` once with a one-line
    // reason (the VM ends it as a guest fault) and stops all waiting, as
    // stop() does. Set before the first shootdown. Without it waits end
    // only by acknowledgement, exit from guest mode, or stop().
    using Unacknowledged = std::function<void(const std::string& why)>;
    void set_ack_limit(std::chrono::nanoseconds limit, Unacknowledged fault);

    ShootdownStats stats() const;
    // One line on where `vcpu` stands in the protocol (for a VM that
    // stopped making progress): the slot's request/ack/nmis/ready, the
    // newest generation pending and the one an NMI was queued for.
    std::string describe(std::uint32_t vcpu) const;

private:
    struct alignas(64) Gate {
        std::atomic<bool> in_guest{false};
        std::atomic<std::uint64_t> pending{0}; // the newest generation requested
        std::uint64_t injected = 0;            // the newest generation an NMI was queued for (vCPU thread only)
        std::atomic<std::uint64_t> nmis{0};
    };
    std::uint64_t* slot_word(std::uint32_t vcpu, std::size_t offset) const;
    void publish(std::uint64_t gen, std::span<const std::uint64_t> pages);
    void wait_ack(std::uint32_t vcpu, std::uint64_t gen);
    void give_up(std::uint32_t vcpu, std::uint64_t gen); // the ack limit passed
    std::vector<std::uint32_t> kicked_; // under mutex_: the vCPUs the current request waits for

    GuestMemory& memory_;
    std::uint64_t info_, slots_;
    std::uint32_t vcpus_;
    Kick kick_;
    bool skip_;
    std::unique_ptr<Gate[]> gates_;
    std::atomic<bool> stopping_{false};
    std::chrono::nanoseconds ack_limit_{0}; // 0: none
    Unacknowledged unacknowledged_;
    mutable std::mutex mutex_; // one request at a time: the mailbox holds one page list
    std::uint64_t gen_ = 0;
    // Written under mutex_, read by stats() at any time without it.
    struct Counters {
        std::atomic<std::uint64_t> shootdowns{0}, targets{0}, waited{0}, deferred{0}, skipped{0}, not_ready{0},
            abandoned{0}, wait_ns{0}, max_wait_ns{0};
    };
    static void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }
    Counters stats_;
};

} // namespace hv
