// The halt watch's side in the VM (halt_watch.hpp holds the judgement):
// waiting for the end, the rounds that hold every vCPU thread out of
// KVM_RUN, and each vCPU's state (vm_machine.hpp).
#include "vmm/run/vm_machine.hpp"

#include "vmm/kvm/vmm_error.hpp"

#include <thread>

namespace hv {

// Outside the vCPU's KVM_RUN (its thread holds it, or has ended): where
// KVM_GET_MP_STATE and KVM_GET_VCPU_EVENTS do not wait, and kvm_run's
// synced registers are the last KVM_RUN's. An ioctl that fails says
// nothing about the guest: then the vCPU counts as running.
VcpuRunState Vm::state_of(const VcpuThread& t) const {
    if (!pc_) return VcpuRunState::Running;
    try {
        const bool interrupts_on = (t.vcpu->run().s.regs.regs.rflags & kRflagsIf) != 0;
        return classify_vcpu(t.vcpu->mp_state(), interrupts_on, t.vcpu->nmi_pending());
    } catch (const std::exception&) {
        return VcpuRunState::Running;
    }
}

// On the vCPU's own thread, between KVM_RUNs: when the halt watch asked for
// a round, say so and stay out of KVM_RUN until the round ends.
void Vm::park_for_probe(VcpuThread& t) {
    const std::uint64_t round = t.probe_request.load(std::memory_order_seq_cst);
    if (round == t.probe_parked.load(std::memory_order_relaxed)) return;
    t.probe_parked.store(round, std::memory_order_release);
    for (std::uint64_t now = probe_round_.load(std::memory_order_acquire); now == round;
         now = probe_round_.load(std::memory_order_acquire))
        probe_round_.wait(round, std::memory_order_acquire);
}

std::uint64_t Vm::exit_events() const {
    std::uint64_t n = 0;
    for (const auto& t : threads_) n += t.exit_events.load(std::memory_order_relaxed);
    return n;
}

// Kicks every vCPU thread out of KVM_RUN and holds it out; once all are
// out, no guest code runs anywhere, so their states are one moment's
// picture, which stuck_vm_message judges. nullopt when some vCPU can still
// run, or when a thread stopped answering (one busy in the VMM: it runs).
std::optional<std::string> Vm::probe_vcpus() {
    const std::uint64_t round = ++probe_rounds_;
    probe_round_.store(round, std::memory_order_seq_cst);
    struct EndRound { // on every way out: the held threads go on
        std::atomic<std::uint64_t>& round;
        ~EndRound() {
            round.store(0, std::memory_order_release);
            round.notify_all();
        }
    } end_round{probe_round_};
    for (std::uint32_t i = 0; i < threads_.size(); ++i) {
        threads_[i].probe_request.store(round, std::memory_order_seq_cst);
        kick(i);
    }
    if (!wait_until_parked(round)) return std::nullopt;
    std::vector<VcpuRunState> states;
    for (const auto& t : threads_) states.push_back(state_of(t));
    return stuck_vm_message(states);
}

// Whether every vCPU thread stopped for `round`; gives up when the VM stops
// or half a second passes in which no further thread did.
bool Vm::wait_until_parked(std::uint64_t round) {
    std::size_t parked = 0;
    auto progress = Clock::now();
    for (;;) {
        std::size_t now = 0;
        for (const auto& t : threads_) now += t.probe_parked.load(std::memory_order_acquire) == round;
        if (now == threads_.size()) return true;
        if (now > parked) {
            parked = now;
            progress = Clock::now();
        } else if (stop_.stopped() || Clock::now() - progress > std::chrono::milliseconds(500)) {
            return false;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
}

// Until the VM stops or --timeout passes. On the PC platform HLT does not
// leave KVM, so whenever no vCPU exited for a while the halt watch asks the
// vCPUs whether any of them can still run.
void Vm::wait_for_end() {
    std::optional<Clock::time_point> deadline;
    if (opt_.timeout_seconds > 0)
        deadline = start_ + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(opt_.timeout_seconds));
    HaltWatchInterval interval;
    std::uint64_t seen = exit_events();
    for (;;) {
        if (!pc_ && !deadline) return stop_.wait();
        Clock::time_point until = pc_ ? Clock::now() + interval.current() : *deadline;
        if (deadline && *deadline < until) until = *deadline;
        if (stop_.wait_until(until)) return;
        if (deadline && Clock::now() >= *deadline) {
            stop_.request(StopReason::Timeout, exit_status::kTimeout,
                          "timeout: the guest ran longer than --timeout " + std::to_string(opt_.timeout_seconds) + " s");
            return;
        }
        if (!pc_) continue;
        if (const std::uint64_t now = exit_events(); now != seen) {
            seen = now;
            interval.exits_seen();
            continue;
        }
        if (auto stuck = probe_vcpus()) {
            stop_.request(StopReason::AllHalted, 0, *stuck);
            return;
        }
        interval.vm_can_run();
        seen = exit_events();
    }
}

// Each vCPU's state once every thread has ended.
std::vector<VcpuRunState> Vm::final_states() const {
    std::vector<VcpuRunState> states;
    for (const auto& t : threads_) states.push_back(state_of(t));
    return states;
}

} // namespace hv
