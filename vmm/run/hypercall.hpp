#pragma once
// The hypercall port (HV_HYPERCALL_PORT): the guest writes the guest-physical
// address of a request block (guest/include/hv/abi.h); the block is read and
// answered through GuestMemory's bounds-checked accessors only.
#include "vmm/kvm/guest_memory.hpp"

#include <hv/abi.h>

#include <cstdint>
#include <optional>
#include <string>

namespace hv {

struct HypercallResult {
    std::uint32_t status = HV_OK;                // returned to the guest in EAX
    std::optional<hv_call_exception> exception;  // an HV_CALL_EXCEPTION report, or the context of a fatal fault
    std::string fatal;                           // non-empty: stop the VM with this reason (--strict-faults)
};

class ShadowPager;

// Who is calling and what serves the shadow-paging calls (none in identity
// mode: those calls answer HV_E_NOT_SHADOW).
struct HypercallContext {
    std::uint32_t vcpu = 0;
    ShadowPager* pager = nullptr;
    bool strict_faults = false; // a page fault the pager cannot resolve stops the VM
};

// Every argument is checked before anything acts on it: the block must lie
// in guest RAM (and where the pager allows) and have the call's size,
// reserved fields must be 0, addresses must be below 2^47 (the lower
// canonical half the MMU covers), op codes and error-code bits must be known.
// An unknown call number is HV_E_UNKNOWN_CALL, a header size other than the
// call's block size HV_E_BAD_SIZE, a block outside RAM HV_E_FAULT.
HypercallResult handle_hypercall(GuestMemory& memory, std::uint64_t block_gpa, const HypercallContext& context = {});

// The request block size of call `nr` (sizeof its struct in abi.h), 0 for
// a number no call has.
std::uint64_t hypercall_block_size(std::uint32_t nr);

const char* exception_mnemonic(std::uint64_t vector); // "#PF", "#GP", ... or "#?"
std::string describe_exception(const hv_call_exception& e);

} // namespace hv
