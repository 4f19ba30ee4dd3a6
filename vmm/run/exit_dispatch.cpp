#include "vmm/run/exit_dispatch.hpp"

#include "devices/bus.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <cstring>

namespace hv {
namespace {

constexpr std::string_view kExceptionReports = "guest exception reports";

GuestLog& guest_log(ExitContext& ctx) {
    if (!ctx.guest_log) ctx.guest_log = std::make_shared<GuestLog>(ctx.log);
    return *ctx.guest_log;
}

ExitAction stop_crash(ExitContext& ctx, std::string message) {
    ctx.stop.request(StopReason::GuestCrash, exit_status::kGuestCrash, std::move(message));
    ExitAction a;
    a.kind = ExitAction::Kind::Stop;
    a.crash_report = true;
    return a;
}

ExitAction hypercall(const ExitRecord& exit, ExitContext& ctx) {
    ExitAction action;
    std::uint32_t gpa = 0;
    std::memcpy(&gpa, exit.data.data(), sizeof gpa);
    const HypercallResult result = handle_hypercall(ctx.memory, gpa, {exit.vcpu, ctx.pager, ctx.strict_faults});
    action.set_rax = result.status;
    if (!result.fatal.empty()) {
        action = stop_crash(ctx, result.fatal);
        action.guest_frame = result.exception;
        return action;
    }
    if (result.exception) {
        const auto& e = *result.exception;
        const std::string line = "vcpu " + std::to_string(exit.vcpu) + ": " + describe_exception(e);
        if (e.flags & HV_EXC_RECOVERABLE) {
            guest_log(ctx).print(kExceptionReports, line + " (handled by the guest)");
        } else {
            action = stop_crash(ctx, "unhandled " + describe_exception(e));
            action.guest_frame = e;
        }
    }
    return action;
}

ExitAction port_or_mmio(const ExitRecord& exit, ExitContext& ctx) {
    const bool port = exit.kind == ExitKind::Io;
    if (exit.size == 0 || exit.data.size() < std::uint64_t{exit.size} * exit.count)
        return stop_crash(ctx, std::string("malformed ") + to_string(exit.kind) + " exit: " +
                                   std::to_string(exit.count) + " x " + std::to_string(exit.size) +
                                   " bytes with a " + std::to_string(exit.data.size()) + "-byte buffer");
    if (port && exit.address == HV_HYPERCALL_PORT && exit.is_write && exit.size == 4 && exit.count == 1)
        return hypercall(exit, ctx);
    Bus& bus = port ? ctx.ports : ctx.mmio;
    for (std::uint32_t i = 0; i < exit.count; ++i) {
        auto chunk = exit.data.subspan(std::size_t{i} * exit.size, exit.size);
        const BusResult r = exit.is_write ? bus.write(exit.address, chunk) : bus.read(exit.address, chunk);
        if (r == BusResult::Unclaimed && ctx.strict_io)
            return stop_crash(ctx, std::string("--strict-io: unclaimed ") + (port ? "port " : "MMIO ") +
                                       (exit.is_write ? "write to " : "read from ") + hex(exit.address) +
                                       " (" + std::to_string(exit.size) + " bytes)");
        if (ctx.stop.stopped()) break; // e.g. debug-exit: later repetitions do not matter
    }
    return {};
}

} // namespace

ExitAction dispatch_exit(const ExitRecord& exit, ExitContext& ctx) {
    switch (exit.kind) {
    case ExitKind::Io:
    case ExitKind::Mmio: return port_or_mmio(exit, ctx);
    case ExitKind::Hlt: {
        ExitAction a;
        a.kind = (exit.rflags & kRflagsIf) ? ExitAction::Kind::Park : ExitAction::Kind::Halted;
        return a;
    }
    case ExitKind::Shutdown: return stop_crash(ctx, "triple fault (KVM_EXIT_SHUTDOWN)");
    case ExitKind::InternalError: {
        std::string why = "KVM internal error, suberror " + std::to_string(exit.detail);
        if (exit.detail == KVM_INTERNAL_ERROR_EMULATION) why += " (instruction emulation failed)";
        if (exit.detail == KVM_INTERNAL_ERROR_SIMUL_EX) why += " (exception while delivering an exception)";
        if (exit.detail == KVM_INTERNAL_ERROR_DELIVERY_EV) why += " (event delivery failed)";
        return stop_crash(ctx, why);
    }
    case ExitKind::FailEntry:
        return stop_crash(ctx, "VM entry failed, hardware reason " + hex(exit.detail));
    case ExitKind::SystemEvent: {
        ctx.stop.request(StopReason::GuestShutdown, 0,
                         exit.detail == KVM_SYSTEM_EVENT_RESET ? "guest requested a reset" : "guest requested power-off");
        ExitAction a;
        a.kind = ExitAction::Kind::Stop;
        return a;
    }
    case ExitKind::Unknown: break;
    }
    return stop_crash(ctx, "unhandled KVM exit reason " + std::to_string(exit.raw_reason));
}

} // namespace hv
