#pragma once
// Shadow mode of `vmm run`: the MMU library joined to a KVM guest. Guest
// RAM is the frame space, tables and data pages in the two pools of
// ShadowLayout; the tables themselves live in VMM memory and guest RAM only
// mirrors them (FrameSpace::Mirror), so nothing the guest writes changes an
// entry the VMM reads; the static ranges of ShadowLayout are mapped for
// good; the region at HV_SHADOW_REGION_BASE is one memslot over a host
// address space and is demand-mapped by page-fault hypercalls; zaps shoot
// down the vCPUs' TLBs through KvmShootdown; an optional host thread churns
// the region. Owns everything shadow mode adds; the Vm drives it.
#include "mmu/soft/host_churn.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/shadow/kvm_shootdown.hpp"
#include "vmm/shadow/shadow_layout.hpp"
#include "vmm/shadow/shadow_pager.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
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

// Fault service times as the VMM sees them, per vCPU (written by that vCPU's
// thread only): a log-linear histogram, 4 buckets per power of two.
class alignas(64) LatencyHistogram {
public:
    void add(std::uint64_t ns);
    void merge(const LatencyHistogram& o);
    std::uint64_t count() const { return count_; }
    std::uint64_t percentile(double p) const; // upper bound of the bucket holding the p-th percentile, ns
    struct Bucket {
        std::uint64_t lower, upper; // ns, both inclusive
    };
    Bucket percentile_bucket(double p) const; // the bucket holding the p-th percentile ({0, 0} when empty)
private:
    static constexpr unsigned kSub = 4, kBuckets = 64 * kSub;
    static unsigned bucket(std::uint64_t ns);
    static std::uint64_t lower(unsigned b);
    static std::uint64_t upper(unsigned b);
    std::uint64_t count_ = 0;
    std::uint32_t buckets_[kBuckets] = {};
};

// The --stats figures of a histogram: its p50 and p99 are only known to lie
// in a bucket, so both bounds are given, e.g. "p50 57343 ns, p99 327679 ns
// (upper bounds of their histogram buckets: p50 in 49152-57343 ns, p99 in
// 262144-327679 ns; 64 timed)". The upper bounds lead for the scripts that
// read "p50 N ns, p99 M ns" (vmm bench kvm).
std::string describe_percentiles(const LatencyHistogram& h);

class ShadowVm final : public ShadowPager {
public:
    ShadowVm(GuestMemory& memory, const ShadowLayout& layout, std::uint32_t cpus, const ShadowOptions& options,
             KvmShootdown::Kick kick, std::function<void(const std::string&)> log);
    ~ShadowVm() override;

    std::uint64_t cr3() const { return mmu_->root() << 12; }
    void set_tsc_khz(std::uint64_t khz); // tells the guest (hv_shadow_info.tsc_khz)
    KvmShootdown& shootdown() { return *shootdown_; }
    // Called (from the churn thread) when host churn fails; set before start_churn().
    void set_failure_handler(std::function<void(const std::string&)> failure) { failure_ = std::move(failure); }
    void start_churn();
    void stop_churn(); // idempotent; joins the thread
    static constexpr int kChurnNice = -20;

    // ShadowPager: timed and counted, then served by the MMU.
    std::uint32_t page_fault(std::uint32_t vcpu, std::uint64_t address, std::uint32_t error_code) override;
    std::uint32_t host_op(std::uint32_t op, std::uint64_t address, std::uint64_t address2, bool& changed) override;
    bool block_allowed(std::uint64_t gpa, std::uint64_t size) const override;
    std::uint32_t verify(std::span<const hv_stamp> stamps, std::uint64_t guest_lost, std::uint64_t& lost,
                                 std::uint64_t& checked) override;

    // The --stats lines for shadow mode, and the MMU audit (empty when clean).
    std::string stats() const;
    std::vector<std::string> audit();
    std::uint64_t lost_writes() const { return lost_.load(); }
    bool verified() const { return verified_.load(); }

private:
    void write_info();
    // Around every host unmap of region page N (churn or hypercall): the
    // counters the coherence check uses to tell discarded from lost writes.
    void unmap_starts(std::uint64_t page);
    void unmap_ends(std::uint64_t page);
    std::atomic_ref<std::uint64_t> counter(std::uint64_t array, std::uint64_t page) const;

    GuestMemory& memory_;
    ShadowLayout layout_;
    std::uint32_t cpus_;
    ShadowOptions options_;
    std::function<void(const std::string&)> log_;
    std::function<void(const std::string&)> failure_;
    std::unique_ptr<mmu::FrameSpace> frames_;      // host and shadow tables
    std::unique_ptr<mmu::FrameSpace> data_frames_; // the region's pages
    std::unique_ptr<mmu::HostAddressSpace> host_;
    std::unique_ptr<KvmShootdown> shootdown_;
    std::unique_ptr<mmu::ShadowMmu> mmu_;
    std::unique_ptr<MmuPager> pager_;
    std::vector<LatencyHistogram> fault_ns_; // per vCPU
    std::atomic<std::uint64_t> host_ops_{0};
    std::atomic<std::uint64_t> lost_{0};
    std::atomic<bool> verified_{false};

    std::mutex churn_mutex_;
    std::thread churn_thread_;
    std::atomic<bool> churn_stop_{false};
    mmu::ChurnCounters churn_counters_;
    bool churn_done_ = false;
    std::atomic<int> churn_nice_{0};       // the churn thread's nice value once raised
    std::atomic<int> churn_nice_error_{0}; // errno of a failed setpriority
    void raise_churn_priority();           // on the churn thread
    std::shared_ptr<mmu::HostChurn> churn_; // the churn run() by churn_thread_ (churn_mutex_); a verify pauses it
    std::shared_ptr<mmu::HostChurn> running_churn(); // churn_, unless stop_churn() ended it

    // The lines a guest can repeat by calling HV_CALL_VERIFY again and
    // again. Declared last: destroyed first, it prints its counts while
    // log_ still works.
    GuestLog guest_log_{[this](std::string_view line) {
        if (log_) log_(std::string(line));
    }};
};

} // namespace hv
