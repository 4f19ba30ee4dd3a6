#pragma once
// What the hypercall layer (vmm/run/hypercall.cpp) needs from shadow paging:
// resolve a guest page fault, run one host operation on one page for a guest
// that wants deterministic churn, and check the guest's last writes at the
// end of a run. The hypercall layer checks the request block and the
// argument ranges; a pager checks addresses against its memslots.
//
// The one seam between the exit path and the MMU: MmuPager (mmu_pager.hpp)
// is the pager of every VM; tests put recording and gating pagers here to
// drive the hypercall layer's argument checks and its one-verify-at-a-time
// rule without an MMU.
#include "vmm/kvm/guest_memory.hpp"

#include <hv/abi.h>

#include <atomic>
#include <cstdint>
#include <span>

namespace hv {

class ShadowPager {
public:
    virtual ~ShadowPager() = default;
    // All return an enum hv_status.

    // A guest page fault at `address` on vCPU `vcpu`; error_code bit 1 is a
    // write. HV_OK when the access can run again (installed, or raced an
    // invalidation: the guest retries the access and faults again if it must).
    virtual std::uint32_t page_fault(std::uint32_t vcpu, std::uint64_t address, std::uint32_t error_code) = 0;
    // Host operation `op` (enum hv_host_op) on the host page behind guest
    // address `address`; `changed` says whether the host changed anything.
    // `address2` is used by HV_HOST_MERGE only, as the guest address of the
    // page merged into `address`'s page; the hypercall layer has made it 0
    // for every other op.
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
    // HV_CALL_VERIFY over stamps already read from the guest (abi.h): `lost`
    // = guest_lost + the stamps whose value the VMM does not find, `checked`
    // = the stamps compared.
    virtual std::uint32_t verify(std::span<const hv_stamp> stamps, std::uint64_t guest_lost, std::uint64_t& lost,
                                 std::uint64_t& checked) = 0;

    // HV_CALL_VERIFY of the `count` stamps at guest-physical `table`, which
    // the caller found inside RAM and allowed: copies them (the guest cannot
    // change the table while it is checked) and hands the copy to verify().
    // One call at a time per pager, i.e. per VM: a copy is up to
    // HV_VERIFY_MAX stamps, which every vCPU calling at once must not
    // multiply. A call while another runs gets HV_E_BUSY at once, with
    // `lost` and `checked` untouched: no vCPU thread waits for another's.
    std::uint32_t verify_table(const GuestMemory& memory, std::uint64_t table, std::uint64_t count,
                               std::uint64_t guest_lost, std::uint64_t& lost, std::uint64_t& checked);

private:
    std::atomic<bool> verifying_{false}; // a verify_table() call holds the turn
};

} // namespace hv
