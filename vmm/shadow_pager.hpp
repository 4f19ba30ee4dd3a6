#pragma once
// What the hypercall layer needs from shadow paging (issue 4): resolve a
// guest page fault, and run one host operation on one page for a guest that
// wants deterministic churn. The hypercall layer checks the request block
// and the argument ranges; a pager checks addresses against its memslots.
// MmuPager is the one over the MMU library.
#include "host_address_space.hpp"
#include "shadow_mmu.hpp"

#include <hv/abi.h>

#include <cstdint>

namespace hv {

class ShadowPager {
public:
    virtual ~ShadowPager() = default;
    // Both return an enum hv_status.
    virtual std::uint32_t page_fault(std::uint32_t vcpu, std::uint64_t address, std::uint32_t error_code) = 0;
    virtual std::uint32_t host_op(std::uint32_t op, std::uint64_t address, std::uint64_t address2, bool& changed) = 0;
};

class MmuPager final : public ShadowPager {
public:
    MmuPager(mmu::ShadowMmu& mmu, mmu::HostAddressSpace& host) : mmu_(mmu), host_(host) {}
    std::uint32_t page_fault(std::uint32_t vcpu, std::uint64_t address, std::uint32_t error_code) override;
    std::uint32_t host_op(std::uint32_t op, std::uint64_t address, std::uint64_t address2, bool& changed) override;

private:
    mmu::ShadowMmu& mmu_;
    mmu::HostAddressSpace& host_;
};

} // namespace hv
