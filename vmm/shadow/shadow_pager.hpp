#pragma once
// What the hypercall layer needs from shadow paging: resolve a guest page
// fault, run one host operation on one page for a guest that wants
// deterministic churn, and check the guest's last writes at the end of a
// run. The hypercall layer checks the request block and the argument
// ranges; a pager checks addresses against its memslots.
// MmuPager is the one over the MMU library.
#include "mmu/host/host_address_space.hpp"
#include "mmu/secondary/shadow_mmu.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/kvm/guest_log.hpp"

#include <hv/abi.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <span>
#include <string>

namespace hv {

class ShadowPager {
public:
    virtual ~ShadowPager() = default;
    // All return an enum hv_status.
    virtual std::uint32_t page_fault(std::uint32_t vcpu, std::uint64_t address, std::uint32_t error_code) = 0;
    virtual std::uint32_t host_op(std::uint32_t op, std::uint64_t address, std::uint64_t address2, bool& changed) = 0;
    // Whether the VMM may read and write a request block (or a verify table)
    // at [gpa, gpa + size). In shadow mode only the static ranges qualify:
    // the rest of RAM holds the MMU's own tables and the guest's data pages,
    // which a host operation may free and reuse while the call runs, so a
    // write-back there could land in a table.
    virtual bool block_allowed(std::uint64_t gpa, std::uint64_t size) const {
        (void)gpa;
        (void)size;
        return true;
    }
    // HV_CALL_VERIFY over stamps already read from the guest (abi.h).
    virtual std::uint32_t verify(std::span<const hv_stamp> stamps, std::uint64_t guest_lost, std::uint64_t& lost,
                                 std::uint64_t& checked) = 0;

    // HV_CALL_VERIFY of the `count` stamps at guest-physical `table`, which
    // the caller found inside RAM and allowed: copies them (the guest cannot
    // change the table while it is checked) and hands the copy to verify().
    // One call at a time per pager, i.e. per VM: a copy is up to
    // HV_VERIFY_MAX stamps (24 MiB), which every vCPU calling at once must
    // not multiply. A call while another runs gets HV_E_BUSY at once, with
    // `lost` and `checked` untouched: no vCPU thread waits for another's.
    std::uint32_t verify_table(const GuestMemory& memory, std::uint64_t table, std::uint64_t count,
                               std::uint64_t guest_lost, std::uint64_t& lost, std::uint64_t& checked);

private:
    std::atomic<bool> verifying_{false}; // a verify_table() call holds the turn
};

// What MmuPager needs from its owner; every field may stay empty.
struct MmuPagerHooks {
    std::function<void()> quiesce;                         // hold the host still before verify() reads
    std::function<std::uint64_t(std::uint64_t page)> unmaps_started; // host unmaps begun on region page N
    std::function<void(const std::string&)> report;        // verify()'s lost-write lines (through a GuestLog)
    // A fault that raced an invalidation is retried here this many times
    // (yielding in between) before the guest is sent back to retry the
    // access: a vCPU waiting in the VMM is outside guest mode, so the
    // invalidation's shootdown does not have to interrupt it.
    unsigned retries_in_vmm = 0;
};

class MmuPager final : public ShadowPager {
public:
    using Hooks = MmuPagerHooks;
    // [region_base, region_base + region_size): the guest addresses verify accepts.
    MmuPager(mmu::ShadowMmu& mmu, mmu::HostAddressSpace& host, std::uint64_t region_base = 0,
             std::uint64_t region_size = 0, Hooks hooks = {})
        : mmu_(mmu), host_(host), region_base_(region_base), region_size_(region_size), hooks_(std::move(hooks)) {}
    std::uint32_t page_fault(std::uint32_t vcpu, std::uint64_t address, std::uint32_t error_code) override;
    std::uint32_t host_op(std::uint32_t op, std::uint64_t address, std::uint64_t address2, bool& changed) override;
    // check_stamps(), the quiesce hook, compare() with lost-write lines to
    // the report hook (the first few per pager, then a count).
    std::uint32_t verify(std::span<const hv_stamp> stamps, std::uint64_t guest_lost, std::uint64_t& lost,
                                 std::uint64_t& checked) override;

    // verify() in two steps, for an owner that holds the host still in its
    // own way: HV_E_BAD_ARG unless every stamp is an 8-byte aligned address
    // of the region (checked before anything is read, so a bad table changes
    // nothing), then the comparison, with one line per lost write to `log`
    // (may be null). compare() assumes check_stamps() passed.
    std::uint32_t check_stamps(std::span<const hv_stamp> stamps) const;
    void compare(std::span<const hv_stamp> stamps, std::uint64_t guest_lost, std::uint64_t& lost,
                 std::uint64_t& checked, GuestLog* log);

private:
    mmu::ShadowMmu& mmu_;
    mmu::HostAddressSpace& host_;
    std::uint64_t region_base_, region_size_;
    Hooks hooks_;
    GuestLog report_log_{[this](std::string_view line) {
        if (hooks_.report) hooks_.report(std::string(line));
    }};
};

} // namespace hv
