#include "shadow_pager.hpp"

#include <optional>

namespace hv {
namespace {

constexpr std::uint64_t kPage = 4096;

// The host page behind a guest address, through the memslots.
std::optional<std::uint64_t> host_page(const mmu::ShadowMmu& mmu, std::uint64_t address) {
    const auto ha = mmu.guest_to_host(address);
    if (!ha) return std::nullopt;
    return *ha & ~(kPage - 1);
}

} // namespace

std::uint32_t MmuPager::page_fault(std::uint32_t vcpu, std::uint64_t address, std::uint32_t error_code) {
    if (vcpu >= mmu_.config().vcpus) return HV_E_BAD_ARG;
    const mmu::Access access = (error_code & 2) ? mmu::Access::Write : mmu::Access::Read;
    switch (mmu_.fault(vcpu, address, access)) {
    case mmu::FaultResult::Installed:
    case mmu::FaultResult::Retry: return HV_OK; // the access runs again, and faults again if it must
    case mmu::FaultResult::NoMemslot: return HV_E_NO_MEMSLOT;
    case mmu::FaultResult::Refused: return HV_E_REFUSED;
    case mmu::FaultResult::OutOfFrames: return HV_E_NO_MEMORY;
    }
    return HV_E_BAD_ARG;
}

std::uint32_t MmuPager::host_op(std::uint32_t op, std::uint64_t address, std::uint64_t address2, bool& changed) {
    changed = false;
    const auto ha = host_page(mmu_, address);
    if (!ha) return HV_E_NO_MEMSLOT;
    const mmu::HostRange page{*ha, *ha + kPage};
    switch (op) {
    case HV_HOST_MIGRATE: changed = host_.migrate(*ha); break;
    case HV_HOST_UNMAP: changed = host_.unmap(page) != 0; break;
    case HV_HOST_PROTECT: changed = host_.protect(page, false) != 0; break;
    case HV_HOST_UNPROTECT: changed = host_.protect(page, true) != 0; break;
    case HV_HOST_MERGE: {
        const auto other = host_page(mmu_, address2);
        if (!other) return HV_E_NO_MEMSLOT;
        changed = host_.merge(*ha, *other);
        break;
    }
    case HV_HOST_SWAP: changed = host_.swap_out(*ha); break;
    case HV_HOST_AGE: changed = host_.age(page); break;
    default: return HV_E_BAD_ARG;
    }
    return HV_OK;
}

} // namespace hv
