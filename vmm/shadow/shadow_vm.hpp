#pragma once
// Shadow mode of `vmm run`: the MMU library joined to a KVM guest. Guest
// RAM is the frame space, tables and data pages in the two pools of
// ShadowLayout; the tables themselves live in VMM memory and guest RAM only
// mirrors them (FrameSpace::Mirror), so nothing the guest writes changes an
// entry the VMM reads; the static ranges of ShadowLayout are mapped for
// good; the region at HV_SHADOW_REGION_BASE is one memslot over a host
// address space and is demand-mapped by page-fault hypercalls; zaps shoot
// down the vCPUs' TLBs through KvmShootdown; an optional host thread churns
// the region; the VM's MmuPager serves the guest's shadow-paging hypercalls.
// Owns everything shadow mode adds; the Vm drives it.
#include "mmu/soft/host_churn.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/shadow/kvm_shootdown.hpp"
#include "vmm/shadow/mmu_pager.hpp"
#include "vmm/shadow/shadow_layout.hpp"

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace hv {

struct ShadowOptions {
    std::uint64_t region_size = 32ull << 20;
    mmu::ShadowConfig mmu;                 // lock, coherence, batch (vcpus is set from the VM)
    double churn_rate[mmu::kChurnOps] = {}; // host operations per second
    std::uint64_t seed = 1;
    bool strict_faults = false;
    bool skip_shootdown = false; // --unsafe-skip-shootdown
};

class ShadowVm {
public:
    // `log`: where the lines the guest's coherence checks cause go.
    ShadowVm(GuestMemory& memory, const ShadowLayout& layout, std::uint32_t cpus, const ShadowOptions& options,
             KvmShootdown::Kick kick, std::function<void(const std::string&)> log);
    ~ShadowVm();
    ShadowVm(const ShadowVm&) = delete;
    ShadowVm& operator=(const ShadowVm&) = delete;

    std::uint64_t cr3() const { return mmu_->root() << 12; }
    void set_tsc_khz(std::uint64_t khz); // tells the guest (hv_shadow_info.tsc_khz)
    KvmShootdown& shootdown() { return *shootdown_; }
    MmuPager& pager() { return *pager_; } // what the vCPUs' exits call
    // Called (from the churn thread) when host churn fails; set before start_churn().
    void set_failure_handler(std::function<void(const std::string&)> failure) { failure_ = std::move(failure); }
    void start_churn();
    void stop_churn(); // idempotent; joins the thread
    static constexpr int kChurnNice = -20;

    // The --stats lines for shadow mode, and the MMU audit (empty when clean).
    std::string stats() const;
    std::vector<std::string> audit();

private:
    void write_info();
    UnmapCounters unmap_counters() const; // the layout's, in guest RAM

    GuestMemory& memory_;
    ShadowLayout layout_;
    ShadowOptions options_;
    std::function<void(const std::string&)> failure_;
    std::unique_ptr<mmu::FrameSpace> frames_;      // host and shadow tables
    std::unique_ptr<mmu::FrameSpace> data_frames_; // the region's pages
    std::unique_ptr<mmu::HostAddressSpace> host_;
    std::unique_ptr<KvmShootdown> shootdown_;
    std::unique_ptr<mmu::ShadowMmu> mmu_;
    std::unique_ptr<MmuPager> pager_;

    std::mutex churn_mutex_;
    std::thread churn_thread_;
    std::atomic<bool> churn_stop_{false};
    mmu::ChurnCounters churn_counters_;
    std::atomic<int> churn_nice_{0};       // the churn thread's nice value once raised
    std::atomic<int> churn_nice_error_{0}; // errno of a failed setpriority
    void raise_churn_priority();           // on the churn thread
};

} // namespace hv
