#pragma once
// One guest fault as it goes down the shadow MMU's fault path
// (ShadowMmu::fault -> Coherence::resolve -> ShadowMmu::install), as KVM
// passes one struct kvm_page_fault: each step reads what the steps before
// it found and adds its own. Lives on the faulting vCPU's stack.
#include "mmu/host/host_address_space.hpp"
#include "mmu/secondary/memslots.hpp"
#include "mmu/secondary/shadow_types.hpp"

#include <cstdint>
#include <optional>

namespace hv::mmu {

// What an install must find unchanged since the fault began (Coherence::stale).
struct FaultSnapshot {
    std::uint64_t seq = 0;       // invalidations ended
    std::uint64_t slots_gen = 0; // memslots removed
};

struct ShadowFault {
    ShadowFault(std::uint32_t vcpu_, std::uint64_t ga_, Access access_, ShadowCounters& counters_)
        : vcpu(vcpu_), ga(ga_), access(access_), counters(counters_) {}

    // What the vCPU asked.
    std::uint32_t vcpu;
    std::uint64_t ga; // the faulting guest page, 4 KiB aligned
    Access access;
    ShadowCounters& counters; // the vCPU's own slot
    // Taken before the lookups below.
    FaultSnapshot snapshot{};
    // The memslot lookup: the slot and the host address of `ga` in it.
    Memslot slot{};
    std::uint64_t ha = 0;
    // The host lookup: the frame and whether the host lets it be written.
    HostTranslation host{};
    // Under the ptlock policy, the host PT lock of `ha`, held from the host
    // lookup until the install is done (released with the fault).
    std::optional<HostAddressSpace::PteGuard> host_pte;
};

} // namespace hv::mmu
