#pragma once
// The diagnostics printed when a guest crashes: why, every general register,
// the control registers, and a capstone disassembly of the code at RIP (read
// through GuestMemory; says so when RIP is not readable).
#include "vmm/kvm/guest_memory.hpp"

#include <hv/abi.h>
#include <linux/kvm.h>
#include <optional>
#include <span>
#include <string>

namespace hv {

struct CrashInput {
    std::string title = "guest crash"; // the report's first words
    std::string reason;
    std::uint32_t vcpu = 0;
    kvm_regs regs{};
    kvm_sregs sregs{};
    // Set when the guest's exception handler reported its saved registers:
    // those replace the handler's own in the report.
    std::optional<hv_call_exception> guest_frame;
};

std::string format_crash_report(const CrashInput& input, const GuestMemory& memory);

// Disassembles `code` as if located at `address`; `bits` is 16, 32 or 64.
// One instruction per line, at most `max_instructions`.
std::string disassemble(std::span<const std::uint8_t> code, std::uint64_t address, int bits, int max_instructions);

} // namespace hv
