#include "vm.hpp"

#include "boot_image.hpp"
#include "boot_setup.hpp"
#include "console.hpp"
#include "cpuid_fixups.hpp"
#include "bus.hpp"
#include "crash_report.hpp"
#include "debug_exit.hpp"
#include "exit_dispatch.hpp"
#include "file_util.hpp"
#include "format.hpp"
#include "guest_layout.hpp"
#include "halt_watch.hpp"
#include "kvm.hpp"
#include "linux_boot.hpp"
#include "pc_platform.hpp"
#include "run_checks.hpp"
#include "run_report.hpp"
#include "shadow_layout.hpp"
#include "serial16550.hpp"
#include "stop_latch.hpp"
#include "vmm_error.hpp"

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <memory>
#include <mutex>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>
#include <vector>

namespace hv {
namespace {

using Clock = std::chrono::steady_clock;

// The kick signal only has to interrupt KVM_RUN; its handler does nothing.
// SA_RESTART keeps it from failing the vCPU thread's other system calls (a
// console write to a slow pipe): KVM_RUN itself returns a plain -EINTR,
// which is never restarted.
void kick_handler(int) {}
void install_kick_handler() {
    struct sigaction sa{};
    sa.sa_handler = kick_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    sigaction(SIGUSR1, &sa, nullptr);
}

// One per vCPU, on its own cache lines: its thread counts every exit here.
struct alignas(64) VcpuThread {
    std::unique_ptr<KvmVcpu> vcpu;
    pthread_t thread{};
    std::atomic<bool> started{false}; // thread is valid (read by shootdown kicks from other threads)
    std::array<std::uint64_t, kExitKindCount> exits{};
    std::atomic<std::uint64_t> exit_events{0}; // the same count, read by the halt watch while the thread runs
    // Halt watch: the round the VM asked this thread to stop for, and the
    // last round it stopped for (outside KVM_RUN until the round ends).
    std::atomic<std::uint64_t> probe_request{0}, probe_parked{0};
    std::optional<ExitKind> last_exit; // read after the thread ended
    std::string crash_report;
};

class Vm {
public:
    // Guest RAM is mapped before /dev/kvm is opened so that an --mem the
    // host cannot back is reported as such on any machine.
    Vm(const RunOptions& opt, const BootImage& image, BootConfig config)
        : opt_(opt), image_(image), config_(std::move(config)), pc_(opt.platform == Platform::Pc),
          memory_(std::make_unique<GuestMemory>(config_.ram_size)),
          info_(load_guest(*memory_, image_, config_, opt_.image)), serial_file_(open_serial_file(opt)),
          kvm_(Kvm::open()) {
        if (serial_file_) serial_out_ = serial_file_.get();
    }

    int run();

private:
    void setup_devices();
    void create_vcpus(const BootInfo& info);
    void vcpu_loop(VcpuThread& t);
    void park_for_probe(VcpuThread& t);
    void wait_for_end();
    std::optional<std::string> probe_vcpus();
    bool wait_until_parked(std::uint64_t round);
    std::uint64_t exit_events() const;
    void stop_all();
    VcpuRunState state_of(const VcpuThread& t) const;
    std::vector<VcpuRunState> final_states() const;
    RunReport report(Clock::time_point end, const std::vector<VcpuRunState>& states) const;
    std::string unclaimed_stats() const;
    void print_stuck_vcpus(const std::vector<VcpuRunState>& states) const;
    void setup_shadow();
    void kick(std::uint32_t vcpu);
    static void* thread_main(void* arg);

    const RunOptions& opt_;
    const BootImage& image_;
    BootConfig config_;
    bool pc_; // the PC platform: in-kernel irqchip, HLT stays in KVM
    std::unique_ptr<GuestMemory> memory_;
    BootInfo info_;
    using FilePtr = std::unique_ptr<std::FILE, int (*)(std::FILE*)>;
    static FilePtr open_serial_file(const RunOptions& opt) {
        if (!opt.serial_file) return FilePtr(nullptr, &std::fclose);
        FilePtr f(std::fopen(opt.serial_file->c_str(), "wb"), &std::fclose);
        if (!f) throw VmmError("cannot open --serial file '" + *opt.serial_file + "': " + std::strerror(errno));
        return f;
    }
    FilePtr serial_file_;
    Kvm kvm_;
    std::unique_ptr<KvmVm> vm_;
    std::size_t run_size_ = 0;
    Bus ports_{"port"};
    Bus mmio_{"mmio"};
    std::unique_ptr<Serial16550> serial_;
    std::unique_ptr<DebugExit> debug_exit_;
    std::FILE* serial_out_ = stdout;
    std::atomic<std::int64_t> first_output_ns_{-1};
    std::atomic<std::int64_t> debug_exit_value_{-1}; // the value that ended the run, if the debug-exit port did
    Clock::time_point start_;
    StopLatch stop_;
    std::atomic<std::uint32_t> halted_{0};         // bare platform: vCPUs that executed HLT
    std::atomic<std::uint32_t> halted_with_if_{0};
    std::uint64_t probe_rounds_ = 0;               // PC platform: the halt watch's rounds so far
    std::atomic<std::uint64_t> probe_round_{0};    // the round in progress (0: none); vCPU threads wait on it
    mutable std::mutex log_mutex_;
    std::vector<VcpuThread> threads_;
    std::unique_ptr<ShadowVm> shadow_; // --paging shadow
    std::unique_ptr<PcPlatform> platform_; // --platform pc: the devices KVM's irqchip leaves to us
    std::unique_ptr<Console> console_;     // stdin to the serial port
    static constexpr std::size_t kUnclaimedListed = 32;
    std::vector<std::string> unclaimed_; // Linux: first unclaimed accesses, for --stats (log_mutex_)
    std::size_t unclaimed_count_ = 0;
    long rss_before_vcpus_kib_ = 0, rss_after_vcpus_kib_ = 0;
};

// Resident set size of this process in KiB (0 when /proc is unreadable).
long resident_kib() {
    std::FILE* f = std::fopen("/proc/self/statm", "r");
    if (!f) return 0;
    long size = 0, resident = 0;
    const int n = std::fscanf(f, "%ld %ld", &size, &resident);
    std::fclose(f);
    return n == 2 ? resident * (sysconf(_SC_PAGESIZE) / 1024) : 0;
}

void Vm::setup_devices() {
    serial_ = std::make_unique<Serial16550>([this](std::span<const std::uint8_t> bytes) {
        std::int64_t expected = -1;
        first_output_ns_.compare_exchange_strong(
            expected, std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start_).count());
        std::fwrite(bytes.data(), 1, bytes.size(), serial_out_);
        std::fflush(serial_out_);
    });
    debug_exit_ = std::make_unique<DebugExit>([this](std::uint32_t value) {
        if (stop_.request(StopReason::DebugExit, debug_exit_status(value),
                          "guest wrote " + std::to_string(value) + " to the debug-exit port"))
            debug_exit_value_.store(value);
    });
    ports_.add(HV_SERIAL_PORT, Serial16550::size, *serial_, "serial0 (16550)");
    ports_.add(HV_DEBUG_EXIT_PORT, DebugExit::size, *debug_exit_, "debug-exit");
    auto log = [this](std::string_view line) {
        std::lock_guard lock(log_mutex_);
        std::fprintf(stderr, "vmm: %.*s\n", static_cast<int>(line.size()), line.data());
    };
    if (image_.kind == ImageKind::Linux) {
        // Linux probes legacy ports (COM2-4, floppy, VGA, ...) as it boots:
        // keep the console clean and list them with --stats.
        auto collect = [this](std::string_view line) {
            std::lock_guard lock(log_mutex_);
            if (unclaimed_.size() < kUnclaimedListed) unclaimed_.emplace_back(line);
            ++unclaimed_count_;
        };
        ports_.set_unclaimed_sink(collect);
        mmio_.set_unclaimed_sink(collect);
    } else {
        ports_.set_unclaimed_sink(log);
        mmio_.set_unclaimed_sink(log);
    }
    if (pc_) {
        PcPlatformConfig pc;
        pc.ram_size = config_.ram_size;
        pc.cpus = config_.cpus;
        // What the guest got: a Linux kernel without --cmdline gets the default.
        pc.cmdline = image_.kind == ImageKind::Linux && config_.cmdline.empty() ? kDefaultLinuxCmdline : config_.cmdline;
        platform_ = std::make_unique<PcPlatform>(*vm_, ports_, *serial_, stop_, pc);
    }
}

void Vm::kick(std::uint32_t vcpu) {
    VcpuThread& t = threads_[vcpu];
    std::atomic_ref<std::uint8_t>(t.vcpu->run().immediate_exit).store(1, std::memory_order_seq_cst);
    if (t.started.load(std::memory_order_acquire)) pthread_kill(t.thread, SIGUSR1);
}

void Vm::setup_shadow() {
    require_tdp();
    const ShadowLayout layout = plan_shadow_layout(config_.ram_size, config_.cpus, image_end(image_), opt_.shadow.region_size);
    shadow_ = std::make_unique<ShadowVm>(
        *memory_, layout, config_.cpus, opt_.shadow, [this](std::uint32_t v) { kick(v); },
        [this](const std::string& line) {
            std::lock_guard lock(log_mutex_);
            std::fprintf(stderr, "vmm: %s\n", line.c_str());
        });
}

void Vm::create_vcpus(const BootInfo& info) {
    std::vector<kvm_cpuid_entry2> entries = kvm_.supported_cpuid().entries();
    CpuidFixups fixups;
    fixups.local_apic = pc_;
    fixups.tsc_deadline = kvm_.check_extension(KVM_CAP_TSC_DEADLINE_TIMER);
    apply_cpuid_fixups(entries, fixups);
    const CpuidTable cpuid(std::move(entries));
    threads_ = std::vector<VcpuThread>(config_.cpus); // in place: VcpuThread does not move
    for (std::uint32_t i = 0; i < config_.cpus; ++i) {
        auto vcpu = vm_->create_vcpu(i, run_size_);
        vcpu->set_cpuid(cpuid.for_vcpu(i));
        vcpu->run().kvm_valid_regs = KVM_SYNC_X86_REGS;
        if (pc_ && i != 0) {
            if (info.kind != ImageKind::Elf64) {
                // An application processor, as on a real PC: its local APIC
                // holds it until the boot CPU sends INIT and SIPI.
                threads_[i].vcpu = std::move(vcpu);
                continue;
            }
            // The ELF test-guest convention (abi.h): every vCPU starts at the entry.
            vcpu->set_mp_state(KVM_MP_STATE_RUNNABLE);
        }
        kvm_sregs sregs = vcpu->get_sregs();
        setup_sregs(sregs, info.kind);
        kvm_regs regs = initial_regs(info, config_, i);
        if (shadow_) {
            sregs.cr3 = shadow_->cr3();
            regs.r8 = HV_SHADOW_INFO;
            if (i == 0) shadow_->set_tsc_khz(vcpu->tsc_khz());
        }
        vcpu->set_sregs(sregs);
        vcpu->set_regs(regs);
        vcpu->set_fpu_defaults();
        threads_[i].vcpu = std::move(vcpu);
    }
}

void* Vm::thread_main(void* arg) {
    auto* pair = static_cast<std::pair<Vm*, VcpuThread*>*>(arg);
    Vm* vm = pair->first;
    VcpuThread* t = pair->second;
    delete pair;
    try {
        vm->vcpu_loop(*t);
    } catch (const std::exception& e) {
        vm->stop_.request(StopReason::VmmFailure, exit_status::kVmmError,
                          "vcpu " + std::to_string(t->vcpu->index()) + ": " + e.what());
    }
    return nullptr;
}

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

void Vm::vcpu_loop(VcpuThread& t) {
    KvmVcpu& vcpu = *t.vcpu;
    kvm_run& run = vcpu.run();
    ExitContext ctx{ports_, mmio_, *memory_, stop_, opt_.strict_io,
                    [this](std::string_view line) {
                        std::lock_guard lock(log_mutex_);
                        std::fprintf(stderr, "vmm: %.*s\n", static_cast<int>(line.size()), line.data());
                    },
                    shadow_.get(), opt_.shadow.strict_faults};
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

void Vm::stop_all() {
    if (shadow_) shadow_->shootdown().stop();
    for (std::uint32_t i = 0; i < threads_.size(); ++i) kick(i);
    for (auto& t : threads_)
        if (t.started) pthread_join(t.thread, nullptr);
}

// Each vCPU's state once every thread has ended.
std::vector<VcpuRunState> Vm::final_states() const {
    std::vector<VcpuRunState> states;
    for (const auto& t : threads_) states.push_back(state_of(t));
    return states;
}

// After a timeout (every vCPU thread has ended): where each vCPU was, so a
// guest that stopped making progress can be told from one that was slow.
void Vm::print_stuck_vcpus(const std::vector<VcpuRunState>& states) const {
    std::vector<std::uint32_t> never_started;
    for (std::size_t i = 0; i < threads_.size(); ++i) {
        const auto& t = threads_[i];
        std::string line = "vcpu " + std::to_string(t.vcpu->index()) + " at the timeout: ";
        if (states[i] == VcpuRunState::NotStarted) {
            never_started.push_back(t.vcpu->index());
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

int Vm::run() {
    kvm_.require_capabilities();
    if (pc_) {
        try {
            kvm_.require_capabilities(pc_platform_capabilities());
        } catch (const VmmError& e) {
            throw VmmError(std::string(e.what()) +
                           "; the PC platform needs them (--platform bare runs ELF and multiboot guests without)");
        }
    }
    const unsigned max = kvm_.max_vcpus();
    if (config_.cpus > max)
        throw VmmError("--cpus " + std::to_string(config_.cpus) + " exceeds KVM's maximum of " + std::to_string(max) +
                       " vCPUs (KVM_CAP_MAX_VCPUS)");
    ensure_fd_limit(config_.cpus);
    run_size_ = kvm_.vcpu_mmap_size();
    vm_ = std::make_unique<KvmVm>(kvm_);
    if (kvm_.check_extension(KVM_CAP_SET_TSS_ADDR)) vm_->set_tss_addr(0xfffbd000); // Intel needs it; unused by our guests
    vm_->set_user_memory(0, 0, memory_->size(), memory_->host_base());
    if (pc_) {
        vm_->create_pc_irqchip(); // before the vCPUs: each gets a local APIC
        vm_->enable_x2apic_api(kvm_);
    }
    setup_devices();
    if (opt_.paging == RunOptions::Paging::Shadow) setup_shadow();
    rss_before_vcpus_kib_ = resident_kib();
    create_vcpus(info_);

    install_kick_handler();
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setstacksize(&attr, 1u << 20); // 1 MiB: 1024 vCPU threads stay cheap
    start_ = Clock::now();
    for (auto& t : threads_) {
        auto* arg = new std::pair<Vm*, VcpuThread*>(this, &t);
        const int err = pthread_create(&t.thread, &attr, &Vm::thread_main, arg);
        if (err) {
            delete arg;
            stop_.request(StopReason::VmmFailure, exit_status::kVmmError,
                          "cannot start vCPU thread " + std::to_string(t.vcpu->index()) + ": " + std::strerror(err));
            break;
        }
        t.started.store(true, std::memory_order_release);
    }
    pthread_attr_destroy(&attr);
    rss_after_vcpus_kib_ = resident_kib();
    if (shadow_) shadow_->start_churn();
    if (opt_.console_input)
        console_ = std::make_unique<Console>(
            STDIN_FILENO, *serial_,
            [this] { stop_.request(StopReason::ConsoleQuit, 0, "console: Ctrl-A x typed, VM stopped"); }, 20,
            // Linux resets the UART while it probes it: hold input until its
            // driver listens. Other guests may poll without interrupts.
            image_.kind == ImageKind::Linux);

    wait_for_end();
    stop_all();
    const auto end = Clock::now();
    console_.reset(); // the terminal's own settings again before the VMM's last messages
    std::vector<std::string> audit;
    if (shadow_) audit = shadow_->audit(); // stops the churn; every vCPU thread has ended
    serial_->flush();
    std::fflush(serial_out_);

    const StopState st = stop_.state();
    const std::vector<VcpuRunState> states = final_states();
    for (const auto& t : threads_)
        if (!t.crash_report.empty()) std::fputs(t.crash_report.c_str(), stderr);
    if (st.reason != StopReason::DebugExit && st.reason != StopReason::GuestCrash)
        std::fprintf(stderr, "vmm: %s\n", st.message.c_str());
    if (st.reason == StopReason::GuestCrash && std::none_of(threads_.begin(), threads_.end(),
                                                            [](auto& t) { return !t.crash_report.empty(); }))
        std::fprintf(stderr, "vmm: guest crash: %s\n", st.message.c_str());
    RunReport rep = report(end, states);
    if (opt_.stats) std::fputs(run_stats_text(rep).c_str(), stderr);
    if (st.reason == StopReason::Timeout) print_stuck_vcpus(states);
    int status = st.status;
    if (!audit.empty()) {
        std::fprintf(stderr, "vmm: shadow MMU audit found %zu problems after the run:\n", audit.size());
        for (std::size_t i = 0; i < audit.size() && i < 20; ++i) std::fprintf(stderr, "vmm:   %s\n", audit[i].c_str());
        rep.end = {StopReason::VmmFailure, exit_status::kVmmError,
                   "shadow MMU audit found " + std::to_string(audit.size()) + " problems after the run"};
        status = exit_status::kVmmError;
    }
    if (opt_.json_file) write_run_report(*opt_.json_file, rep);
    return status;
}

// `image_kind` is set once the image is known, for the report of a failure after that.
int run_vm_unreported(const RunOptions& opt, std::optional<std::string>& image_kind) {
    validate_run_options(opt);
    const std::vector<std::uint8_t> file = read_file(opt.image, "image", opt.mem);
    const BootImage image = parse_boot_image(file, opt.image);
    image_kind = image_kind_id(image.kind);
    check_image_fits(image, opt.mem, opt.cpus, opt.image);
    if (opt.paging == RunOptions::Paging::Shadow) {
        if (image.kind != ImageKind::Elf64)
            throw VmmError("--paging shadow runs 64-bit ELF images only; '" + opt.image + "' is a " + to_string(image.kind));
        // Before /dev/kvm: a layout that cannot work is reported on any machine.
        plan_shadow_layout(opt.mem, opt.cpus, image_end(image), opt.shadow.region_size);
    }
    BootConfig config;
    config.ram_size = opt.mem;
    config.cpus = opt.cpus;
    config.cmdline = opt.cmdline;
    config.pc_firmware = opt.platform == Platform::Pc;
    if (opt.initrd) config.modules.push_back({*opt.initrd, read_file(*opt.initrd, "--initrd", opt.mem)});
    Vm vm(opt, image, std::move(config));
    return vm.run();
}

} // namespace

const char* to_string(Platform platform) { return platform == Platform::Pc ? "pc" : "bare"; }

RunReport base_report(const RunOptions& opt) {
    RunReport r;
    r.image = opt.image;
    r.platform = to_string(opt.platform);
    r.paging = opt.paging == RunOptions::Paging::Shadow ? "shadow" : "identity";
    r.cpus = opt.cpus;
    r.mem = opt.mem;
    r.shadow = opt.paging == RunOptions::Paging::Shadow;
    return r;
}

void write_failure_report(const RunOptions& opt, const std::string& message, std::optional<std::string> image_kind) {
    if (!opt.json_file) return;
    RunReport r = base_report(opt);
    r.image_kind = std::move(image_kind);
    r.end = {StopReason::VmmFailure, exit_status::kVmmError, message};
    try {
        write_run_report(*opt.json_file, r);
    } catch (const std::exception&) {
        // The run's own error is the one to report.
    }
}

int run_vm(const RunOptions& opt) {
    // An unwritable --json file is refused before anything runs.
    if (opt.json_file && !std::ofstream(*opt.json_file, std::ios::app))
        throw VmmError("--json: cannot write '" + *opt.json_file + "': " + std::strerror(errno));
    std::optional<std::string> image_kind;
    try {
        return run_vm_unreported(opt, image_kind);
    } catch (const std::exception& e) {
        write_failure_report(opt, e.what(), image_kind);
        throw;
    }
}

} // namespace hv
