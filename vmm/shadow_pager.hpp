#pragma once
// What the hypercall layer needs from shadow paging: resolve a guest page
// fault, run one host operation on one page for a guest that wants
// deterministic churn, and check the guest's last writes at the end of a
// run. The hypercall layer checks the request block and the argument
// ranges; a pager checks addresses against its memslots.
// MmuPager is the one over the MMU library.
#include "host_address_space.hpp"
#include "shadow_mmu.hpp"

#include <hv/abi.h>

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
};

// What MmuPager needs from its owner; every field may stay empty.
struct MmuPagerHooks {
    std::function<void()> quiesce;                         // stop host churn before a verify
    std::function<std::uint64_t(std::uint64_t page)> unmaps_started; // host unmaps begun on region page N
    std::function<void(const std::string&)> report;        // one line per lost write (the first few)
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
    std::uint32_t verify(std::span<const hv_stamp> stamps, std::uint64_t guest_lost, std::uint64_t& lost,
                                 std::uint64_t& checked) override;

private:
    mmu::ShadowMmu& mmu_;
    mmu::HostAddressSpace& host_;
    std::uint64_t region_base_, region_size_;
    Hooks hooks_;
};

} // namespace hv
