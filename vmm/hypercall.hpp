#pragma once
// The hypercall port (HV_HYPERCALL_PORT): the guest writes the guest-physical
// address of a request block (guest/include/hv/abi.h); the block is read and
// answered through GuestMemory's bounds-checked accessors only.
#include "guest_memory.hpp"

#include <hv/abi.h>
#include <optional>
#include <string>

namespace hv {

struct HypercallResult {
    std::uint32_t status = HV_OK;                // returned to the guest in EAX
    std::optional<hv_call_exception> exception;  // an HV_CALL_EXCEPTION report
};

HypercallResult handle_hypercall(GuestMemory& memory, std::uint64_t block_gpa);

const char* exception_mnemonic(std::uint64_t vector); // "#PF", "#GP", ... or "#?"
std::string describe_exception(const hv_call_exception& e);

} // namespace hv
