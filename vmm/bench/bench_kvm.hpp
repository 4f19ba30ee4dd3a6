#pragma once
// `vmm bench kvm`: the touch guest (guest/touch.c: every vCPU writes each of
// its own fresh pages once) under KVM, per vCPU count, on KVM's own paging
// (identity: the VMM's tables once, EPT/NPT faults taken by KVM) and on the
// shadow MMU (every first touch a #PF that the VMM serves), in the same run.
// Each VM is a child `vmm run --stats` (a crash or timeout fails that
// measurement, not the process); the figures are the guest's own TSC cycles
// per first touch, and the VMM's fault counters and service latency.
#include "vmm/bench/bench_report.hpp"

#include "mmu/secondary/shadow_mmu.hpp"

#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace hv::bench {

struct KvmBenchConfig {
    std::vector<std::uint32_t> vcpus{1, 4, 16, 64};
    std::vector<mmu::LockPolicy> locks{mmu::LockPolicy::Rw};
    std::vector<mmu::CoherencePolicy> coherences{mmu::CoherencePolicy::Seq};
    std::uint64_t pages = 256; // per vCPU (the touch guest's pages=N)
    unsigned repeat = 3;
    std::string vmm;   // the vmm binary each VM runs in
    std::string guest; // touch.elf
    unsigned timeout_s = 300; // each VM's --timeout
    std::string dev_kvm = "/dev/kvm", sysfs_root = "/sys/module"; // where availability is probed
    std::function<void(std::size_t done, std::size_t total, const std::string& what)> progress;
};

// The --quick sweep: 1 and 4 vCPUs, 64 pages each, one repeat.
KvmBenchConfig quick_kvm_config();

// What this host can run: identity paging needs /dev/kvm; shadow paging also
// needs KVM with EPT/NPT (vm.cpp, require_tdp). The reasons say what was
// found.
struct KvmAvailability {
    bool identity = false, shadow = false;
    std::string identity_reason, shadow_reason; // why not, when not
};
KvmAvailability kvm_bench_availability(const std::string& dev_kvm = "/dev/kvm",
                                       const std::string& sysfs_root = "/sys/module");

// The figures of one `vmm run --stats touch.elf`.
struct TouchRun {
    bool shadow = false;
    std::uint64_t vcpus = 0, pages = 0;        // pages per vCPU
    std::uint64_t guest_faults = 0;            // #PFs the guest sent to the VMM
    std::uint64_t cycles_per_touch = 0;        // first touches of all vCPUs, common start to last end
    std::uint64_t fastest_vcpu_cycles = 0;     // per page, of the fastest vCPU alone
    // Shadow only (the VMM's --stats):
    std::uint64_t vmm_faults = 0, installs = 0, retries = 0, shootdowns = 0;
    std::uint64_t fault_p50_ns = 0, fault_p99_ns = 0;
};
// Throws std::runtime_error naming the line it expected when the output is
// not that of a successful touch run.
TouchRun parse_touch_run(std::string_view output);

// No KVM here: the experiment cannot run at all (what() is the reason).
struct KvmBenchSkipped : std::runtime_error {
    using std::runtime_error::runtime_error;
};

// Throws std::invalid_argument for a bad configuration (vCPUs outside
// 1..1024, pages 0, repeat 0, a guest or vmm that is not there),
// KvmBenchSkipped when identity paging is unavailable, and
// std::runtime_error when a VM fails (its command and output's tail). When
// only shadow paging is unavailable its rows are left out and the reason is
// in the metadata (`shadow_unavailable`).
BenchReport run_kvm_bench(const KvmBenchConfig& config);

} // namespace hv::bench
