// What the VM reports when it ends: --stats, --json and the timeout's
// picture of every vCPU (vm_machine.hpp).
#include "vmm/run/vm_machine.hpp"

#include "vmm/kvm/text_format.hpp"
#include "vmm/run/crash_report.hpp"

#include <sys/resource.h>

namespace hv {

// After a timeout (every vCPU thread has ended): where each vCPU was, so a
// guest that stopped making progress can be told from one that was slow.
void Vm::print_stuck_vcpus(const std::vector<VcpuRunState>& states,
                           const std::vector<std::uint32_t>& never_started) const {
    for (std::size_t i = 0; i < threads_.size(); ++i) {
        const auto& t = threads_[i];
        std::string line = "vcpu " + std::to_string(t.vcpu->index()) + " at the timeout: ";
        if (states[i] == VcpuRunState::NotStarted) {
            line += "waiting for INIT/SIPI (never started)";
        } else if (states[i] == VcpuRunState::WaitingForSipi) {
            line += "waiting for SIPI (INIT received)";
        } else {
            const kvm_regs& r = t.vcpu->run().s.regs.regs;
            line += "rip=" + hex(r.rip) + " rsp=" + hex(r.rsp) + " last exit " +
                    (t.last_exit ? to_string(*t.last_exit) : "none");
            if (states[i] == VcpuRunState::HaltedInterruptsOn) line += " (halted, interrupts on)";
            if (states[i] == VcpuRunState::HaltedInterruptsOff) line += " (halted, interrupts off)";
        }
        if (shadow_) line += "; " + shadow_->shootdown().describe(t.vcpu->index());
        std::fprintf(stderr, "vmm: %s\n", line.c_str());
    }
    if (!never_started.empty())
        std::fprintf(stderr, "vmm: %zu vCPUs never left wait-for-SIPI: vcpu %s\n", never_started.size(),
                     format_vcpu_list(never_started).c_str());
    // A kernel we did not write gives no other clue: its registers and the
    // code it spins in, for the first few vCPUs that ran.
    if (image_.kind == ImageKind::Elf64) return;
    for (std::size_t i = 0, shown = 0; i < threads_.size() && shown < 4; ++i) {
        if (states[i] == VcpuRunState::NotStarted || states[i] == VcpuRunState::WaitingForSipi) continue;
        CrashInput in;
        in.title = "timeout";
        in.reason = "where the vCPU was";
        in.vcpu = static_cast<std::uint32_t>(i);
        in.regs = threads_[i].vcpu->get_regs();
        in.sregs = threads_[i].vcpu->get_sregs();
        std::fputs(format_crash_report(in, *memory_).c_str(), stderr);
        ++shown;
    }
}

std::string Vm::unclaimed_stats() const {
    if (image_.kind != ImageKind::Linux) return {};
    std::lock_guard lock(log_mutex_);
    std::string out = "  unclaimed addresses  " + std::to_string(unclaimed_count_) +
                      " (each reported once, reads gave all ones)" + (unclaimed_count_ ? ":" : "") + "\n";
    for (const auto& line : unclaimed_) out += "    " + line + "\n";
    if (unclaimed_count_ > unclaimed_.size())
        out += "    ... and " + std::to_string(unclaimed_count_ - unclaimed_.size()) + " more\n";
    return out;
}

RunReport Vm::report(Clock::time_point end, const std::vector<VcpuRunState>& states) const {
    RunReport r = base_report(opt_);
    r.image_kind = image_kind_id(image_.kind);
    r.end = stop_.state();
    if (const std::int64_t v = debug_exit_value_.load(); v >= 0 && r.end.reason == StopReason::DebugExit)
        r.guest_exit_code = static_cast<std::uint32_t>(v);
    if (const std::int64_t first = first_output_ns_.load(); first >= 0) r.first_output_ms = static_cast<double>(first) / 1e6;
    r.total_ms = std::chrono::duration<double, std::milli>(end - start_).count();
    for (const auto& t : threads_)
        for (int k = 0; k < kExitKindCount; ++k) r.exits[k] += t.exits[k];
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    r.peak_rss_kib = ru.ru_maxrss;
    if (rss_after_vcpus_kib_ >= rss_before_vcpus_kib_) r.vcpus_rss_kib = rss_after_vcpus_kib_ - rss_before_vcpus_kib_;
    for (std::size_t i = 0; i < states.size(); ++i)
        if (states[i] == VcpuRunState::NotStarted) r.never_started.push_back(static_cast<std::uint32_t>(i));
    if (shadow_) r.extra_stats += shadow_->stats();
    r.extra_stats += unclaimed_stats();
    return r;
}

} // namespace hv
