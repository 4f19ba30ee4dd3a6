#pragma once
// The VM behind run_vm (vm.hpp), internal to the vm*.cpp files: vm_setup.cpp
// builds it (guest RAM, KVM, devices, vCPUs) and runs it, vm_vcpu.cpp holds
// the vCPU threads and their loop, vm_halt_watch.cpp finds a VM nothing can
// wake (halt_watch.hpp), vm_report.cpp writes what --stats, --json and a
// timeout report.
#include "devices/bus.hpp"
#include "devices/debug_exit.hpp"
#include "devices/serial16550.hpp"
#include "vmm/boot/boot_image.hpp"
#include "vmm/boot/boot_setup.hpp"
#include "vmm/kvm/exit_record.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/kvm/stop_latch.hpp"
#include "vmm/platform/pc_platform.hpp"
#include "vmm/run/console.hpp"
#include "vmm/run/halt_watch.hpp"
#include "vmm/run/run_report.hpp"
#include "vmm/run/vm.hpp"
#include "vmm/shadow/shadow_vm.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <mutex>
#include <optional>
#include <pthread.h>
#include <string>
#include <vector>

namespace hv {

using Clock = std::chrono::steady_clock;

// SIGUSR1, the kick that makes a vCPU thread leave KVM_RUN (vm_vcpu.cpp).
void install_kick_handler();

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
    // Loads the image into guest RAM. RAM is mapped before /dev/kvm is
    // opened so that an --mem the host cannot back is reported as such on
    // any machine.
    Vm(const RunOptions& opt, const BootImage& image, BootConfig config);

    // Creates the VM, runs it to its end and reports; returns `vmm run`'s status.
    int run();

private:
    // vm_setup.cpp
    void log_line(std::string_view line) const; // "vmm: LINE" on stderr, one line at a time
    void setup_devices();
    void create_vcpus(const BootInfo& info);
    void setup_shadow();
    // vm_vcpu.cpp: the vCPU threads
    static void* thread_main(void* arg);
    void vcpu_loop(VcpuThread& t);
    void kick(std::uint32_t vcpu);
    void stop_all();
    // vm_halt_watch.cpp (halt_watch.hpp)
    void wait_for_end();
    std::optional<std::string> probe_vcpus();
    bool wait_until_parked(std::uint64_t round);
    void park_for_probe(VcpuThread& t);
    std::uint64_t exit_events() const;
    VcpuRunState state_of(const VcpuThread& t) const;
    std::vector<VcpuRunState> final_states() const;
    // vm_report.cpp
    RunReport report(Clock::time_point end, const std::vector<VcpuRunState>& states) const;
    std::string unclaimed_stats() const;
    void print_stuck_vcpus(const std::vector<VcpuRunState>& states, const std::vector<std::uint32_t>& never_started) const;

    const RunOptions& opt_;
    const BootImage& image_;
    BootConfig config_;
    bool pc_; // the PC platform: in-kernel irqchip, HLT stays in KVM
    std::unique_ptr<GuestMemory> memory_;
    BootInfo info_;
    using FilePtr = std::unique_ptr<std::FILE, int (*)(std::FILE*)>;
    static FilePtr open_serial_file(const RunOptions& opt);
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
    // The lines a guest can repeat at will (its exception reports), limited
    // for the whole VM: every vCPU's exit context shares it.
    std::shared_ptr<GuestLog> guest_log_;
    std::vector<VcpuThread> threads_;
    std::unique_ptr<ShadowVm> shadow_; // --paging shadow
    std::unique_ptr<PcPlatform> platform_; // --platform pc: the devices KVM's irqchip leaves to us
    std::unique_ptr<Console> console_;     // stdin to the serial port
    static constexpr std::size_t kUnclaimedListed = 32;
    std::vector<std::string> unclaimed_; // Linux: first unclaimed accesses, for --stats (log_mutex_)
    std::size_t unclaimed_count_ = 0;
    long rss_before_vcpus_kib_ = 0, rss_after_vcpus_kib_ = 0;
};

} // namespace hv
