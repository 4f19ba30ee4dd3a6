// The vCPU threads: one per vCPU, each running KVM_RUN and dispatching its
// exits until the VM stops (vm_machine.hpp).
#include "vmm/run/vm_machine.hpp"

#include "vmm/kvm/thread_guard.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/run/crash_report.hpp"
#include "vmm/run/exit_dispatch.hpp"

#include <cerrno>
#include <csignal>
#include <cstring>

namespace hv {
namespace {

void kick_handler(int) {}

} // namespace

// The kick signal only has to interrupt KVM_RUN; its handler does nothing.
// SA_RESTART keeps it from failing the vCPU thread's other system calls (a
// console write to a slow pipe): KVM_RUN itself returns a plain -EINTR,
// which is never restarted.
void install_kick_handler() {
    struct sigaction sa{};
    sa.sa_handler = kick_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, nullptr);
}

void Vm::kick(std::uint32_t vcpu) {
    VcpuThread& t = threads_[vcpu];
    std::atomic_ref<std::uint8_t>(t.vcpu->run().immediate_exit).store(1, std::memory_order_seq_cst);
    if (t.started.load(std::memory_order_acquire)) pthread_kill(t.thread, SIGUSR1);
}

void* Vm::thread_main(void* arg) {
    auto* pair = static_cast<std::pair<Vm*, VcpuThread*>*>(arg);
    Vm* vm = pair->first;
    VcpuThread* t = pair->second;
    delete pair;
    run_guarded("vcpu " + std::to_string(t->vcpu->index()), [&] { vm->vcpu_loop(*t); },
                [vm](const std::string& reason) {
                    vm->stop_.request(StopReason::VmmFailure, exit_status::kVmmError, reason);
                });
    return nullptr;
}

void Vm::vcpu_loop(VcpuThread& t) {
    KvmVcpu& vcpu = *t.vcpu;
    kvm_run& run = vcpu.run();
    ExitContext ctx{ports_, mmio_, *memory_, stop_, opt_.strict_io,
                    [this](std::string_view line) { log_line(line); }, shadow_ ? &shadow_->pager() : nullptr,
                    opt_.shadow.strict_faults,
                    guest_log_};
    KvmShootdown* shootdown = shadow_ ? &shadow_->shootdown() : nullptr;
    std::atomic_ref<std::uint8_t> immediate_exit(run.immediate_exit);
    for (;;) {
        // A kick (stop, shootdown, halt watch) sets immediate_exit; clear it,
        // then look at what the kick was for: stop_all() sets the stop latch,
        // and the others their requests, before they kick.
        immediate_exit.store(0, std::memory_order_seq_cst);
        if (stop_.stopped()) break;
        park_for_probe(t);
        if (shootdown && shootdown->enter_guest(vcpu.index())) vcpu.nmi();
        const int r = vcpu.enter();
        if (shootdown) shootdown->leave_guest(vcpu.index());
        if (r == -EINTR || r == -EAGAIN) continue; // kicked, or an AP that just received INIT or SIPI
        if (r < 0) throw VmmError(std::string("KVM_RUN failed: ") + std::strerror(-r));
        const ExitRecord exit = decode_exit(run, run_size_, vcpu.index());
        ++t.exits[static_cast<int>(exit.kind)];
        t.exit_events.fetch_add(1, std::memory_order_relaxed);
        t.last_exit = exit.kind;
        const ExitAction action = dispatch_exit(exit, ctx);
        if (action.set_rax) {
            run.s.regs.regs.rax = *action.set_rax;
            run.kvm_dirty_regs |= KVM_SYNC_X86_REGS;
        }
        if (action.crash_report) {
            CrashInput in;
            in.reason = stop_.state().message;
            in.vcpu = vcpu.index();
            in.regs = vcpu.get_regs();
            in.sregs = vcpu.get_sregs();
            in.guest_frame = action.guest_frame;
            t.crash_report = format_crash_report(in, *memory_);
        }
        switch (action.kind) {
        case ExitAction::Kind::Resume: break;
        case ExitAction::Kind::Stop: return;
        case ExitAction::Kind::Halted:
        case ExitAction::Kind::Park: {
            // Only the bare platform sees HLT (with a local APIC in KVM it
            // stays there; the halt watch covers that case). Bare, the VM has
            // no interrupt sources, so a vCPU halted with interrupts on can
            // never wake either: both count as halted for good.
            if (action.kind == ExitAction::Kind::Park) halted_with_if_.fetch_add(1);
            if (halted_.fetch_add(1) + 1 == config_.cpus) {
                const std::uint32_t with_if = halted_with_if_.load();
                stop_.request(StopReason::AllHalted, 0,
                              with_if == 0 ? std::string("all vCPUs halted with interrupts off")
                                           : "all vCPUs halted (" + std::to_string(with_if) +
                                                 " with interrupts on, but this VM has no interrupt source to wake them)");
            }
            stop_.wait();
            return;
        }
        }
    }
}

void Vm::stop_all() {
    if (shadow_) shadow_->shootdown().stop();
    for (std::uint32_t i = 0; i < threads_.size(); ++i) kick(i);
    for (auto& t : threads_)
        if (t.started) pthread_join(t.thread, nullptr);
}

} // namespace hv
