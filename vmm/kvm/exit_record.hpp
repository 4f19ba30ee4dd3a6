#pragma once
// One vCPU exit, decoded from kvm_run into a plain record so the dispatch
// logic can be driven by unit tests and fuzzers with synthetic exits.
#include <cstdint>
#include <linux/kvm.h>
#include <span>

namespace hv {

inline constexpr std::uint64_t kRflagsIf = 1u << 9; // interrupts enabled

enum class ExitKind { Io, Mmio, Hlt, Shutdown, InternalError, FailEntry, SystemEvent, Unknown };
const char* to_string(ExitKind kind);
inline constexpr int kExitKindCount = 8;

struct ExitRecord {
    ExitKind kind = ExitKind::Unknown;
    std::uint32_t vcpu = 0;
    std::uint32_t raw_reason = 0; // KVM_EXIT_*

    // Io (port) and Mmio: `data` holds size*count bytes (KVM's buffer for
    // port I/O, run.mmio.data for MMIO); reads are answered in place.
    bool is_write = false;
    std::uint64_t address = 0; // port number or guest-physical address
    std::uint32_t size = 0;    // bytes per access: 1, 2, 4 (8 for MMIO)
    std::uint32_t count = 1;   // > 1 for string I/O (rep ins/outs)
    std::span<std::uint8_t> data;

    // Registers KVM_CAP_SYNC_REGS delivered with the exit.
    std::uint64_t rax = 0, rip = 0, rflags = 0;

    // Failure details: hardware_entry_failure_reason, internal suberror, or
    // system event type.
    std::uint64_t detail = 0;
};

// Decodes the exit KVM left in `run` (mapped with `run_size` bytes). Port
// I/O whose data lies outside the mapping decodes as Unknown.
ExitRecord decode_exit(kvm_run& run, std::size_t run_size, std::uint32_t vcpu);

} // namespace hv
