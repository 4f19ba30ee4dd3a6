#pragma once
// The pager of a shadow-mode VM: what the hypercall layer calls for a guest
// page fault, a host operation or a coherence check (ShadowPager), served
// by the MMU library. It owns what those calls need beyond the MMU: the
// VMM's retry of faults that raced an invalidation, the fault service
// times, the unmap counting around host unmaps, the host churn it holds
// still while it compares, and the limit on the lines a guest makes it print.
#include "mmu/host/host_address_space.hpp"
#include "mmu/secondary/memslots.hpp"
#include "mmu/secondary/shadow_mmu.hpp"
#include "mmu/soft/host_churn.hpp"
#include "vmm/kvm/guest_log.hpp"
#include "vmm/shadow/latency_histogram.hpp"
#include "vmm/shadow/shadow_pager.hpp"
#include "vmm/shadow/unmap_counters.hpp"

#include <hv/abi.h>

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <span>
#include <vector>

namespace hv {

struct MmuPagerSetup {
    // The demand-mapped region: the guest addresses a verify stamp may name,
    // and the pages `unmaps` counts. Empty: every stamp is HV_E_BAD_ARG.
    mmu::GuestRange region;
    // One counter pair per region page; empty: host unmaps are not counted
    // and a value read back as 0 is always a lost write.
    UnmapCounters unmaps;
    // The guest-physical ranges where request blocks and verify tables may
    // lie (block_allowed); empty: anywhere in RAM.
    std::vector<mmu::GuestRange> call_ranges;
    // Where the lost-write and coherence-check lines go (through a GuestLog:
    // the first few of each kind, then a count when the pager goes).
    GuestLog::Sink log;
};

class MmuPager final : public ShadowPager {
public:
    using Setup = MmuPagerSetup;
    // A fault that raced an invalidation is retried here this many times
    // (yielding in between) before the guest is sent back to retry the
    // access: a vCPU waiting in the VMM is outside guest mode, so the
    // invalidation's shootdown does not have to interrupt it. The one place
    // the VMM retries a fault.
    static constexpr unsigned kFaultRetries = 64;

    // The MMU and the host must outlive the pager.
    MmuPager(mmu::ShadowMmu& mmu, mmu::HostAddressSpace& host, Setup setup = {});

    // Timed per vCPU; HV_E_BAD_ARG for a vCPU the MMU does not have.
    std::uint32_t page_fault(std::uint32_t vcpu, std::uint64_t address, std::uint32_t error_code) override;
    // Counted; an unmap of a region page is counted in `unmaps` around it.
    std::uint32_t host_op(std::uint32_t op, std::uint64_t address, std::uint64_t address2, bool& changed) override;
    bool block_allowed(std::uint64_t gpa, std::uint64_t size) const override;
    // HV_E_BAD_ARG unless every stamp is an 8-byte aligned address of the
    // region (checked before anything is read, so a bad table changes
    // nothing); then the comparison with the churn held still, one line per
    // lost write and one coherence-check line per call. The guest's own
    // count is taken as given: a guest can only make its own verdict worse
    // by lying, or hide its own losses.
    std::uint32_t verify(std::span<const hv_stamp> stamps, std::uint64_t guest_lost, std::uint64_t& lost,
                         std::uint64_t& checked) override;

    // The host churn verify() pauses (never stops: the guest decides when it
    // verifies and must not switch off the host operations the experiment
    // asked for) while it compares; nullptr once it no longer runs.
    void hold_still_while_verifying(std::shared_ptr<mmu::HostChurn> churn);

    LatencyHistogram fault_latency() const; // all vCPUs' fault service times; read once the vCPUs are done
    std::uint64_t host_ops() const { return host_ops_.load(std::memory_order_relaxed); }

private:
    mmu::FaultResult fault_with_retries(std::uint32_t vcpu, std::uint64_t address, mmu::Access access);
    std::uint32_t run_host_op(std::uint32_t op, std::uint64_t address, std::uint64_t address2, bool& changed);
    std::uint32_t check_stamps(std::span<const hv_stamp> stamps) const;
    void compare(std::span<const hv_stamp> stamps, std::uint64_t& lost, std::uint64_t& checked);
    std::shared_ptr<mmu::HostChurn> churn() const;

    mmu::ShadowMmu& mmu_;
    mmu::HostAddressSpace& host_;
    const Setup setup_;
    std::vector<LatencyHistogram> fault_ns_; // per vCPU
    std::atomic<std::uint64_t> host_ops_{0};
    mutable std::mutex churn_mutex_;
    std::shared_ptr<mmu::HostChurn> churn_; // churn_mutex_
    GuestLog log_{setup_.log};
};

} // namespace hv
