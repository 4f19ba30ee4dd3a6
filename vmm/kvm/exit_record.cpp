#include "vmm/kvm/exit_record.hpp"

namespace hv {

const char* to_string(ExitKind kind) {
    switch (kind) {
    case ExitKind::Io: return "io";
    case ExitKind::Mmio: return "mmio";
    case ExitKind::Hlt: return "hlt";
    case ExitKind::Shutdown: return "shutdown";
    case ExitKind::InternalError: return "internal-error";
    case ExitKind::FailEntry: return "fail-entry";
    case ExitKind::SystemEvent: return "system-event";
    case ExitKind::Unknown: return "unknown";
    }
    return "?";
}

ExitRecord decode_exit(kvm_run& run, std::size_t run_size, std::uint32_t vcpu) {
    ExitRecord rec;
    rec.vcpu = vcpu;
    rec.raw_reason = run.exit_reason;
    rec.rax = run.s.regs.regs.rax;
    rec.rip = run.s.regs.regs.rip;
    rec.rflags = run.s.regs.regs.rflags;
    switch (run.exit_reason) {
    case KVM_EXIT_IO: {
        const std::uint64_t bytes = std::uint64_t{run.io.size} * run.io.count;
        if (run.io.data_offset > run_size || bytes > run_size - run.io.data_offset) break;
        rec.kind = ExitKind::Io;
        rec.is_write = run.io.direction == KVM_EXIT_IO_OUT;
        rec.address = run.io.port;
        rec.size = run.io.size;
        rec.count = run.io.count;
        rec.data = {reinterpret_cast<std::uint8_t*>(&run) + run.io.data_offset, static_cast<std::size_t>(bytes)};
        break;
    }
    case KVM_EXIT_MMIO:
        rec.kind = ExitKind::Mmio;
        rec.is_write = run.mmio.is_write;
        rec.address = run.mmio.phys_addr;
        rec.size = run.mmio.len <= sizeof run.mmio.data ? run.mmio.len : sizeof run.mmio.data;
        rec.data = {run.mmio.data, rec.size};
        break;
    case KVM_EXIT_HLT: rec.kind = ExitKind::Hlt; break;
    case KVM_EXIT_SHUTDOWN: rec.kind = ExitKind::Shutdown; break;
    case KVM_EXIT_INTERNAL_ERROR:
        rec.kind = ExitKind::InternalError;
        rec.detail = run.internal.suberror;
        break;
    case KVM_EXIT_FAIL_ENTRY:
        rec.kind = ExitKind::FailEntry;
        rec.detail = run.fail_entry.hardware_entry_failure_reason;
        break;
    case KVM_EXIT_SYSTEM_EVENT:
        rec.kind = ExitKind::SystemEvent;
        rec.detail = run.system_event.type;
        break;
    default: break;
    }
    return rec;
}

} // namespace hv
