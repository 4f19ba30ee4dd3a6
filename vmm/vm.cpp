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
#include "kvm.hpp"
#include "pc_platform.hpp"
#include "run_checks.hpp"
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
#include <memory>
#include <mutex>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>
#include <vector>

namespace hv {
namespace {

using Clock = std::chrono::steady_clock;

// The kick signal only has to interrupt KVM_RUN (EINTR); its handler does nothing.
void kick_handler(int) {}
void install_kick_handler() {
    struct sigaction sa{};
    sa.sa_handler = kick_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0; // no SA_RESTART: KVM_RUN must return EINTR
    sigaction(SIGUSR1, &sa, nullptr);
}

struct VcpuThread {
    std::unique_ptr<KvmVcpu> vcpu;
    pthread_t thread{};
    std::atomic<bool> started{false}; // thread is valid (read by shootdown kicks from other threads)
    std::array<std::uint64_t, kExitKindCount> exits{};
    std::optional<ExitKind> last_exit; // read after the thread ended
    std::string crash_report;
};

class Vm {
public:
    // Guest RAM is mapped before /dev/kvm is opened so that an --mem the
    // host cannot back is reported as such on any machine.
    Vm(const RunOptions& opt, const BootImage& image, BootConfig config)
        : opt_(opt), image_(image), config_(std::move(config)),
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
    void stop_all();
    void print_stats(Clock::time_point start, Clock::time_point end) const;
    void print_stuck_vcpus() const;
    void setup_shadow();
    void kick(std::uint32_t vcpu);
    static void* thread_main(void* arg);

    const RunOptions& opt_;
    const BootImage& image_;
    BootConfig config_;
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
    Clock::time_point start_;
    StopLatch stop_;
    std::atomic<std::uint32_t> halted_{0};
    std::atomic<std::uint32_t> halted_with_if_{0};
    mutable std::mutex log_mutex_;
    std::vector<VcpuThread> threads_;
    std::unique_ptr<ShadowVm> shadow_; // --paging shadow
    std::unique_ptr<PcPlatform> platform_; // Linux: i8042, CMOS, ACPI power-off, serial IRQ
    std::unique_ptr<Console> console_;     // Linux: stdin to the serial port
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
        stop_.request(StopReason::DebugExit, debug_exit_status(value),
                      "guest wrote " + std::to_string(value) + " to the debug-exit port");
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
    if (image_.kind == ImageKind::Linux)
        platform_ = std::make_unique<PcPlatform>(*vm_, ports_, *serial_, stop_, config_.ram_size);
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
    fixups.tsc_deadline = platform_ && kvm_.check_extension(KVM_CAP_TSC_DEADLINE_TIMER);
    apply_cpuid_fixups(entries, fixups);
    const CpuidTable cpuid(std::move(entries));
    threads_ = std::vector<VcpuThread>(config_.cpus); // in place: VcpuThread does not move
    for (std::uint32_t i = 0; i < config_.cpus; ++i) {
        auto vcpu = vm_->create_vcpu(i, run_size_);
        vcpu->set_cpuid(cpuid.for_vcpu(i));
        vcpu->run().kvm_valid_regs = KVM_SYNC_X86_REGS;
        if (info.kind == ImageKind::Linux && i != 0) {
            // An application processor: its local APIC holds it until the
            // boot CPU sends INIT and SIPI, which set its state.
            threads_[i].vcpu = std::move(vcpu);
            continue;
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
    while (!stop_.stopped()) {
        int r = 0;
        if (shootdown) {
            // A shootdown kick sets immediate_exit; clear it, then re-check
            // the stop latch, which stop_all() sets before its own kick.
            immediate_exit.store(0, std::memory_order_seq_cst);
            if (stop_.stopped()) break;
            if (shootdown->enter_guest(vcpu.index())) vcpu.nmi();
            r = vcpu.enter();
            shootdown->leave_guest(vcpu.index());
        } else {
            r = vcpu.enter();
        }
        if (r == -EINTR || r == -EAGAIN) continue; // kicked: re-check the stop latch
        if (r < 0) throw VmmError(std::string("KVM_RUN failed: ") + std::strerror(-r));
        const ExitRecord exit = decode_exit(run, run_size_, vcpu.index());
        ++t.exits[static_cast<int>(exit.kind)];
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
            // This VM has no interrupt sources yet (no irqchip, no timer), so
            // a vCPU halted with interrupts on can never wake either: both
            // count as halted for good.
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
    for (auto& t : threads_) std::atomic_ref<std::uint8_t>(t.vcpu->run().immediate_exit).store(1, std::memory_order_seq_cst);
    for (auto& t : threads_)
        if (t.started) pthread_kill(t.thread, SIGUSR1);
    for (auto& t : threads_)
        if (t.started) pthread_join(t.thread, nullptr);
}

// After a timeout (every vCPU thread has ended): where each vCPU was, so a
// guest that stopped making progress can be told from one that was slow.
void Vm::print_stuck_vcpus() const {
    for (const auto& t : threads_) {
        const kvm_regs& r = t.vcpu->run().s.regs.regs;
        std::string line = "vcpu " + std::to_string(t.vcpu->index()) + " at the timeout: rip=" + hex(r.rip) +
                           " rsp=" + hex(r.rsp) + " last exit " + (t.last_exit ? to_string(*t.last_exit) : "none");
        if (shadow_) line += "; " + shadow_->shootdown().describe(t.vcpu->index());
        std::fprintf(stderr, "vmm: %s\n", line.c_str());
    }
    // A kernel that hangs gives no other clue: its registers and the code it
    // spins in, for the first few vCPUs.
    if (image_.kind != ImageKind::Linux) return;
    for (std::size_t i = 0; i < threads_.size() && i < 4; ++i) {
        CrashInput in;
        in.title = "timeout";
        in.reason = "where the vCPU was";
        in.vcpu = static_cast<std::uint32_t>(i);
        in.regs = threads_[i].vcpu->get_regs();
        in.sregs = threads_[i].vcpu->get_sregs();
        std::fputs(format_crash_report(in, *memory_).c_str(), stderr);
    }
}

void Vm::print_stats(Clock::time_point start, Clock::time_point end) const {
    std::array<std::uint64_t, kExitKindCount> exits{};
    for (const auto& t : threads_)
        for (int k = 0; k < kExitKindCount; ++k) exits[k] += t.exits[k];
    rusage ru{};
    getrusage(RUSAGE_SELF, &ru);
    const double total_ms = std::chrono::duration<double, std::milli>(end - start).count();
    std::fprintf(stderr, "vmm stats:\n");
    const std::int64_t first = first_output_ns_.load();
    if (first >= 0)
        std::fprintf(stderr, "  first guest output   %.3f ms\n", static_cast<double>(first) / 1e6);
    else
        std::fprintf(stderr, "  first guest output   none\n");
    std::fprintf(stderr, "  total run time       %.3f ms\n", total_ms);
    std::fprintf(stderr, "  vcpus                %u\n", config_.cpus);
    std::uint64_t total = 0;
    for (int k = 0; k < kExitKindCount; ++k) total += exits[k];
    std::fprintf(stderr, "  exits                %llu\n", static_cast<unsigned long long>(total));
    for (int k = 0; k < kExitKindCount; ++k)
        if (exits[k])
            std::fprintf(stderr, "    %-18s %llu\n", to_string(static_cast<ExitKind>(k)),
                         static_cast<unsigned long long>(exits[k]));
    std::fprintf(stderr, "  vmm peak rss         %ld KiB\n", ru.ru_maxrss);
    if (config_.cpus && rss_after_vcpus_kib_ >= rss_before_vcpus_kib_)
        std::fprintf(stderr, "  vmm rss per vcpu     %.1f KiB (vCPU fds, kvm_run pages, threads: %ld KiB for %u)\n",
                     static_cast<double>(rss_after_vcpus_kib_ - rss_before_vcpus_kib_) / config_.cpus,
                     rss_after_vcpus_kib_ - rss_before_vcpus_kib_, config_.cpus);
    if (shadow_) std::fputs(shadow_->stats().c_str(), stderr);
    if (platform_) {
        std::lock_guard lock(log_mutex_);
        std::fprintf(stderr, "  unclaimed addresses  %zu (each reported once, reads gave all ones)%s\n", unclaimed_count_,
                     unclaimed_count_ ? ":" : "");
        for (const auto& line : unclaimed_) std::fprintf(stderr, "    %s\n", line.c_str());
        if (unclaimed_count_ > unclaimed_.size())
            std::fprintf(stderr, "    ... and %zu more\n", unclaimed_count_ - unclaimed_.size());
    }
}

int Vm::run() {
    kvm_.require_capabilities();
    if (image_.kind == ImageKind::Linux) kvm_.require_capabilities(pc_platform_capabilities());
    const unsigned max = kvm_.max_vcpus();
    if (config_.cpus > max)
        throw VmmError("--cpus " + std::to_string(config_.cpus) + " exceeds KVM's maximum of " + std::to_string(max) +
                       " vCPUs (KVM_CAP_MAX_VCPUS)");
    ensure_fd_limit(config_.cpus);
    run_size_ = kvm_.vcpu_mmap_size();
    vm_ = std::make_unique<KvmVm>(kvm_);
    if (kvm_.check_extension(KVM_CAP_SET_TSS_ADDR)) vm_->set_tss_addr(0xfffbd000); // Intel needs it; unused by our guests
    vm_->set_user_memory(0, 0, memory_->size(), memory_->host_base());
    if (image_.kind == ImageKind::Linux) {
        vm_->create_pc_irqchip(); // before the vCPUs: each gets a local APIC
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
    if (platform_)
        console_ = std::make_unique<Console>(STDIN_FILENO, *serial_, [this] {
            stop_.request(StopReason::ConsoleQuit, 0, "console: Ctrl-A x typed, VM stopped");
        });

    if (opt_.timeout_seconds > 0) {
        const auto deadline = start_ + std::chrono::duration_cast<Clock::duration>(
                                           std::chrono::duration<double>(opt_.timeout_seconds));
        if (!stop_.wait_until(deadline))
            stop_.request(StopReason::Timeout, exit_status::kTimeout,
                          "timeout: the guest ran longer than --timeout " + std::to_string(opt_.timeout_seconds) + " s");
    } else {
        stop_.wait();
    }
    stop_all();
    const auto end = Clock::now();
    console_.reset(); // the terminal's own settings again before the VMM's last messages
    std::vector<std::string> audit;
    if (shadow_) audit = shadow_->audit(); // stops the churn; every vCPU thread has ended
    serial_->flush();
    std::fflush(serial_out_);

    const StopState st = stop_.state();
    for (const auto& t : threads_)
        if (!t.crash_report.empty()) std::fputs(t.crash_report.c_str(), stderr);
    if (st.reason != StopReason::DebugExit && st.reason != StopReason::GuestCrash)
        std::fprintf(stderr, "vmm: %s\n", st.message.c_str());
    if (st.reason == StopReason::GuestCrash && std::none_of(threads_.begin(), threads_.end(),
                                                            [](auto& t) { return !t.crash_report.empty(); }))
        std::fprintf(stderr, "vmm: guest crash: %s\n", st.message.c_str());
    if (opt_.stats) print_stats(start_, end);
    if (st.reason == StopReason::Timeout) print_stuck_vcpus();
    if (!audit.empty()) {
        std::fprintf(stderr, "vmm: shadow MMU audit found %zu problems after the run:\n", audit.size());
        for (std::size_t i = 0; i < audit.size() && i < 20; ++i) std::fprintf(stderr, "vmm:   %s\n", audit[i].c_str());
        return exit_status::kVmmError;
    }
    return st.status;
}

} // namespace

int run_vm(const RunOptions& opt) {
    validate_run_options(opt);
    const std::vector<std::uint8_t> file = read_file(opt.image, "image", opt.mem);
    const BootImage image = parse_boot_image(file, opt.image);
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
    if (opt.initrd) config.modules.push_back({*opt.initrd, read_file(*opt.initrd, "--initrd", opt.mem)});
    Vm vm(opt, image, std::move(config));
    return vm.run();
}

} // namespace hv
