// Building and running the VM (vm_machine.hpp).
#include "vmm/run/vm_machine.hpp"

#include "vmm/kvm/cpuid_fixups.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/run/host_checks.hpp"
#include "vmm/shadow/shadow_layout.hpp"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unistd.h>

namespace hv {
namespace {

// Resident set size of this process in KiB (0 when /proc is unreadable).
long resident_kib() {
    std::FILE* f = std::fopen("/proc/self/statm", "r");
    if (!f) return 0;
    long size = 0, resident = 0;
    const int n = std::fscanf(f, "%ld %ld", &size, &resident);
    std::fclose(f);
    return n == 2 ? resident * (sysconf(_SC_PAGESIZE) / 1024) : 0;
}

} // namespace

Vm::Vm(const RunOptions& opt, const BootImage& image, BootConfig config)
    : opt_(opt), image_(image), config_(std::move(config)), pc_(opt.platform == Platform::Pc),
      memory_(std::make_unique<GuestMemory>(config_.ram_size)),
      info_(load_guest(*memory_, image_, config_, opt_.image)), serial_file_(open_serial_file(opt)),
      kvm_(Kvm::open()),
      guest_log_(std::make_shared<GuestLog>([this](std::string_view line) { log_line(line); })) {
    if (serial_file_) serial_out_ = serial_file_.get();
}

Vm::FilePtr Vm::open_serial_file(const RunOptions& opt) {
    if (!opt.serial_file) return FilePtr(nullptr, &std::fclose);
    FilePtr f(std::fopen(opt.serial_file->c_str(), "wb"), &std::fclose);
    if (!f) throw VmmError("cannot open --serial file '" + *opt.serial_file + "': " + std::strerror(errno));
    return f;
}

void Vm::log_line(std::string_view line) const {
    std::lock_guard lock(log_mutex_);
    std::fprintf(stderr, "vmm: %.*s\n", static_cast<int>(line.size()), line.data());
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
        auto log = [this](std::string_view line) { log_line(line); };
        ports_.set_unclaimed_sink(log);
        mmio_.set_unclaimed_sink(log);
    }
    if (pc_) {
        PcPlatformConfig pc;
        pc.ram_size = config_.ram_size;
        pc.cpus = config_.cpus;
        pc.cmdline = info_.cmdline;
        platform_ = std::make_unique<PcPlatform>(*vm_, ports_, *serial_, stop_, pc);
    }
}

void Vm::setup_shadow() {
    require_tdp();
    const ShadowLayout layout = plan_shadow_layout(config_.ram_size, config_.cpus, image_end(image_), opt_.shadow.region_size);
    shadow_ = std::make_unique<ShadowVm>(
        *memory_, layout, config_.cpus, opt_.shadow, [this](std::uint32_t v) { kick(v); },
        [this](const std::string& line) { log_line(line); });
    shadow_->shootdown().set_ack_limit(kShootdownAckLimit, [this](const std::string& why) {
        stop_.request(StopReason::GuestCrash, exit_status::kGuestCrash, why);
    });
    shadow_->set_failure_handler(
        [this](const std::string& why) { stop_.request(StopReason::VmmFailure, exit_status::kVmmError, why); });
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

int Vm::run() {
    kvm_.require_capabilities();
    require_kvm_for_image(image_.kind, opt_.image);
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
    guest_log_->finish(); // every vCPU thread has ended: the counts are final
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
    if (st.reason == StopReason::Timeout) print_stuck_vcpus(states, rep.never_started);
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

} // namespace hv
