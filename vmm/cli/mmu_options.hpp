#pragma once
// The MMU policy options `vmm soft` and `vmm run --paging shadow` share:
// --lock, --coherence, --batch and --churn, parsed from their text with
// errors that name the option, what it accepts and what was typed.
#include "mmu/soft/soft_vcpu.hpp"

#include <string>

namespace hv {

struct MmuPolicyArgs {
    std::string lock, coherence, batch, churn; // empty = not given (the default stays)
};

// Fills the policy fields of `shadow` and the rates of `churn_rate` from what
// was given; throws VmmError.
void parse_mmu_policies(const MmuPolicyArgs& args, mmu::ShadowConfig& shadow, double (&churn_rate)[mmu::kChurnOps]);

} // namespace hv
