#pragma once
// Software vCPUs (DESIGN.md, "The two executors"): threads that run access
// streams through a private TLB, walk the shadow MMU's secondary table on a
// miss and call ShadowMmu::fault() on a hole; the TLB shootdown protocol the
// shadow MMU drives; churn threads that move pages under them; and a
// checker that proves no write was lost or misdirected. The contract in
// full (the two TLB models, the stamps, the shootdown protocol and its
// bounded wait, how a run ends) is docs/soft-vcpus.md; the invariants each
// class keeps are at the class.
#include "mmu/host/host_address_space.hpp"
#include "mmu/secondary/shadow_mmu.hpp"
#include "mmu/soft/host_churn.hpp"
#include "mmu/soft/soft_churn.hpp"
#include "mmu/soft/soft_device.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <vector>

namespace hv::mmu {

enum class AccessPattern { Sequential, Random };
enum class Sharing { Disjoint, Shared };
const char* to_string(AccessPattern p);
const char* to_string(Sharing s);

// How an access trusts its TLB entry (see the header comment).
enum class TlbModel { Recheck, Hardware };
const char* to_string(TlbModel m);

struct TlbConfig {
    std::uint32_t entries = 64; // rounded to a multiple of `ways`
    std::uint32_t ways = 4;     // 1 = direct mapped
    TlbModel model = TlbModel::Recheck;
};

// The frames of a software run: one anonymous mapping, the host and shadow
// tables in its first `table_frames`, data pages in the rest
// (HostAddressSpace's two pools), so that a store through a stale
// translation (TlbModel::Hardware) can only reach a data frame.
struct SoftFrames {
    // Table frames for a region of `pages` pages and `vcpus` vCPUs: a leaf
    // table per 512 pages on each side, the upper levels, and slack.
    static std::size_t table_frames(std::uint64_t pages, std::uint32_t vcpus);
    // Throws (FrameSpace's exceptions) unless 0 < table_frames < total.
    SoftFrames(std::size_t total, std::size_t table_frames);
    FrameSpace memory; // owns the mapping; nothing is allocated from it
    FrameSpace tables, data;
};

struct SoftRunConfig {
    std::uint32_t vcpus = 4;
    std::uint64_t pages = 256; // working set: per vCPU when disjoint, in total when shared
    AccessPattern pattern = AccessPattern::Random;
    Sharing sharing = Sharing::Disjoint;
    double write_fraction = 0.3;
    TlbConfig tlb;
    std::uint64_t ops_per_vcpu = 0; // > 0: each vCPU does exactly this many accesses
    double seconds = 2.0;           // used when ops_per_vcpu == 0
    std::uint64_t seed = 1;
    double churn_rate[kChurnOps] = {}; // host operations per second, by ChurnOp
    std::chrono::microseconds protect_hold{500}; // protect: read-only for this long, then writable again
    // vCPUs keep accessing past ops_per_vcpu (bounded runs) or `seconds`
    // (timed runs; at most kChurnQuotaWait longer) until the churn thread
    // attempted this many operations of every enabled kind, so a short run
    // is sure to overlap the churn.
    std::uint64_t min_churn_ops = 0;
    SoftChurnConfig soft_churn;   // memslot removals, zero-page merges, ranges (soft_churn.hpp); min_churn_ops too
    double device_rate = 0;       // > 0: an external-TLB device translates this often per second (soft_device.hpp)
    std::uint32_t memslots = 1;   // SoftRig: the region in this many memslots, one large and small ones (soft_run.cpp)
    // Wall-clock bound of the whole run: past it every vCPU abandons its
    // access, every shootdown wait gives up and the run fails (timed_out).
    // 0: `seconds` + kChurnQuotaWait + kTimeLimitSlack, or kOpsTimeLimit with ops_per_vcpu.
    double time_limit = 0;
    // Region pages for the configuration.
    std::uint64_t region_pages() const { return sharing == Sharing::Disjoint ? pages * vcpus : pages; }
};

// Summed over vCPUs at the end of a run.
struct SoftVcpuCounters {
    std::uint64_t accesses = 0, reads = 0, writes = 0, tlb_hits = 0, tlb_misses = 0, walks = 0, walk_fills = 0;
    std::uint64_t faults = 0, retries = 0, refused = 0, out_of_frames = 0;
    std::uint64_t flushes_honoured = 0, stale_dropped = 0, violations = 0, lost_writes = 0, unmap_excused = 0;
    std::uint64_t no_memslot = 0; // accesses that found no memslot (removed for now): not done, not expected
    SoftVcpuCounters& operator+=(const SoftVcpuCounters& o);
};

struct ShootdownCounters {
    // requests: to vCPUs in access, waited for; idle_requests: to vCPUs
    // outside, honoured when they enter, not waited for.
    std::uint64_t shootdowns = 0, targets = 0, requests = 0, acks = 0, idle_requests = 0, flush_all = 0;
    std::uint64_t deferred = 0; // requests left pending past the ack wait (the vCPU was not running)
    std::uint64_t abandoned = 0; // unbounded waits given up past the run's time limit
};

struct SoftRunResult {
    SoftVcpuCounters vcpu;
    ShootdownCounters shootdown;
    ChurnCounters churn;
    SoftChurnCounters soft_churn;
    SoftDeviceCounters device;       // the external-TLB device's translations (none without device_rate)
    ExternalTlbCounters external_tlb; // its TLB's, invalidations included
    std::uint64_t cow_breaks = 0, host_merges = 0; // host copy-on-write breaks and merges during the run
    bool timed_out = false;          // the time limit ended the run
    ShadowCounters mmu;        // everything
    ShadowCounters mmu_faults; // the vCPUs' fault paths only
    ShadowCounters mmu_zaps;   // zaps and memslot changes only
    std::uint64_t lost_writes = 0; // during the run plus the final verification
    std::uint64_t final_lost_writes = 0;
    std::uint64_t violations = 0;
    std::vector<std::string> audit;   // ShadowMmu::audit(), the TLB audits (vCPUs', the device's) after the run
    std::vector<std::string> details; // the first few lost writes / violations
    double seconds = 0;               // wall time of the access phase
    bool ok() const { return lost_writes == 0 && violations == 0 && audit.empty() && !timed_out; }
};

class SoftVcpuSystem final : public TlbShootdown {
public:
    static constexpr std::size_t kFlushAllThreshold = 32;
    static constexpr std::size_t kMaxDetails = 8;
    static constexpr std::chrono::microseconds kDefaultAckWait{200};
    static constexpr std::chrono::microseconds kAckSpin{20};
    // How long a timed run waits past `seconds` for the churn quota.
    static constexpr std::chrono::seconds kChurnQuotaWait{120};
    static constexpr std::chrono::seconds kTimeLimitSlack{60}; // SoftRunConfig::time_limit's default
    static constexpr std::chrono::seconds kOpsTimeLimit{600};
    // How often an unbounded shootdown wait looks at abandon_waits().
    static constexpr std::chrono::milliseconds kAbandonPoll{10};

    // `vcpus` in 1..kMaxVcpus; throws std::invalid_argument otherwise.
    SoftVcpuSystem(HostAddressSpace& host, std::uint32_t vcpus, TlbConfig tlb = {});
    ~SoftVcpuSystem() override;
    SoftVcpuSystem(const SoftVcpuSystem&) = delete;
    SoftVcpuSystem& operator=(const SoftVcpuSystem&) = delete;

    // The MMU and the region the streams run over: guest pages
    // [guest_base, guest_base + pages * 4096) mapped by one memslot onto host
    // [host_base, ...). The caller adds the memslot and the host mapping.
    void attach(ShadowMmu& mmu, std::uint64_t guest_base, std::uint64_t host_base, std::uint64_t pages);

    // Runs the streams (and the churn thread when any rate is set), joins,
    // audits the MMU and verifies every stamp. The MMU's ShadowConfig::vcpus
    // must be at least config.vcpus, which must not exceed this system's.
    SoftRunResult run(const SoftRunConfig& config);

    // TlbShootdown
    void shootdown(const VcpuMask& targets, std::span<const std::uint64_t> pages) override;

    // How long shootdown() waits for an in-access vCPU's acknowledgement
    // before it leaves the request pending and returns; zero waits forever.
    // The Hardware model always waits until the vCPU acknowledges or leaves.
    void set_ack_wait(std::chrono::microseconds wait) { ack_wait_ = wait; }

    // ---- Single steps, for tests (the calling thread acts as vCPU v) -----
    // One access to region page `page`: enters, accesses (faulting and
    // retrying as needed), leaves (the vCPU is outside again).
    bool access_once(std::uint32_t v, std::uint64_t page, Access access);
    // The same for a vCPU already entered (it stays in access after).
    bool access(std::uint32_t v, std::uint64_t page, Access access);
    // A host unmap of region pages [first, first + count) that excuses the
    // slots it zeroes, as the churn thread's unmaps do.
    std::size_t unmap_pages(std::uint64_t first, std::uint64_t count);
    // For quiescent states: every vCPU's slots hold the stamps it last
    // wrote (verify_final of a run); returns the number that do not.
    std::uint64_t verify_stamps(std::uint32_t vcpus) { return verify_final(vcpus); }
    // The first kMaxDetails lost writes and violations found so far.
    std::vector<std::string> details();
    // Marks v in access / outside, as the stream loop does (leaving honours
    // pending requests).
    void enter(std::uint32_t v);
    void leave(std::uint32_t v);
    // From now on an access that has to fault again or retry gives up
    // (returns false) instead: for a harness whose schedule ended early,
    // where a broken protocol could keep one refaulting forever.
    void stop_accesses() { stop_.store(true, std::memory_order_relaxed); }
    // From now on every shootdown wait gives up (counted as abandoned)
    // instead of waiting for a vCPU that may never answer: for a run past
    // its time limit. run() clears it when it starts.
    void abandon_waits() { abandon_waits_.store(true, std::memory_order_release); }
    // An access boundary of an in-access vCPU: honours pending flush requests.
    void boundary(std::uint32_t v) { check_boundary(cpu_[v]); }
    bool tlb_contains(std::uint32_t v, std::uint64_t guest_address);
    ShootdownCounters shootdown_counters() const;
    // For quiescent states (no stream running): after honouring pending
    // requests, every TLB entry must agree with the present secondary entry
    // (same frame, no more writable). An entry that does not was zapped
    // without a flush reaching this vCPU. One line per problem.
    std::vector<std::string> audit_tlbs(std::uint32_t vcpus);
    SoftVcpuCounters vcpu_counters(std::uint32_t v) const;
    std::uint32_t vcpus() const { return vcpus_; }

private:
    struct TlbEntry {
        std::uint64_t tag = 0; // guest page number + 1; 0 = invalid
        Pfn pfn = 0;
        bool writable = false;
    };
    struct Model {
        std::uint64_t stamp = 0;      // the last stamp this vCPU wrote to the page
        std::uint64_t unmap_done = 0; // unmaps of the page completed when it wrote
    };
    struct alignas(64) Vcpu {
        std::mutex m;                     // pending requests; honouring them
        std::atomic<bool> in_access{false};
        std::atomic<bool> flush_pending{false};
        std::vector<std::uint64_t> pending_pages; // under m
        bool pending_all = false;                 // under m
        std::uint32_t posted = 0;                 // under m: requests posted (wraps)
        std::atomic<std::uint32_t> acked{0};      // requests acknowledged (a futex word)
        // Owned by the vCPU thread (and by honour(), under m).
        std::vector<std::uint64_t> dropped; // guest page numbers of entries gone since release_tables()
        std::vector<TlbEntry> tlb;
        std::vector<std::uint32_t> next_way;
        std::vector<Model> model;           // by region page
        std::uint64_t seq = 0;
        SoftVcpuCounters c;
    };

    static std::uint64_t load_slot(const std::uint8_t* p) {
        std::uint64_t v;
        std::memcpy(&v, p, 8);
        return v;
    }
    enum class Step { Done, Refault, Refused, OutOfFrames };
    bool do_access(Vcpu& s, std::uint32_t v, std::uint64_t page, Access access);
    Step try_access(Vcpu& s, std::uint32_t v, std::uint64_t page, Access access, TlbEntry& e);
    void stale_entry(Vcpu& s, std::uint32_t v, std::uint64_t ga, const TlbEntry& e, std::uint64_t hp);
    TlbEntry* tlb_find(Vcpu& s, std::uint64_t gpn);
    void tlb_fill(Vcpu& s, std::uint64_t gpn, Pfn pfn, bool writable);
    void tlb_invalidate(Vcpu& s, std::span<const std::uint64_t> pages, bool all);
    void honour(Vcpu& s); // caller holds s.m
    // On the vCPU's thread, between accesses: leaves the shootdown mask of
    // every leaf table whose last TLB entry was dropped (ShadowMmu::leave_table).
    void release_tables(Vcpu& s, std::uint32_t v);
    void check_boundary(Vcpu& s);
    bool slot_owner(std::uint32_t v) const;
    void detail(std::string text);
    void stream(std::uint32_t v, const SoftRunConfig& config, const std::function<bool()>& quotas_met);
    ChurnConfig churn_config(const SoftRunConfig& config);
    void time_out(const SoftRunConfig& config, std::uint32_t still_running, const char* what, SoftRunResult& res);
    std::uint64_t verify_final(std::uint32_t vcpus);

    HostAddressSpace& host_;
    ShadowMmu* mmu_ = nullptr;
    std::uint32_t vcpus_;
    TlbConfig tlb_;
    std::uint32_t sets_ = 1;
    std::uint64_t guest_base_ = 0, host_base_ = 0, pages_ = 0;
    Sharing sharing_ = Sharing::Shared; // of the current run; single steps treat the region as shared
    std::uint64_t model_pages_ = 0;     // pages per vCPU (disjoint) of the current run
    std::unique_ptr<Vcpu[]> cpu_;
    // Per region page: unmaps started / completed (the excuse for a zeroed slot).
    std::unique_ptr<std::atomic<std::uint64_t>[]> unmap_started_, unmap_done_;
    std::atomic<bool> stop_{false}, churn_stop_{false}, abandon_waits_{false};

    std::chrono::microseconds ack_wait_{kDefaultAckWait};
    std::atomic<std::uint64_t> sd_shootdowns_{0}, sd_targets_{0}, sd_requests_{0}, sd_acks_{0}, sd_idle_{0},
        sd_flush_all_{0}, sd_deferred_{0}, sd_abandoned_{0};
    std::mutex details_mutex_;
    std::vector<std::string> details_;
};

// A complete software setup: frame space, host address space, the shadow
// MMU, the vCPUs, one memslot over the region. `frames` = 0 sizes the frame
// space from the configuration. `shootdown` replaces the system as the MMU's
// TlbShootdown (tests use it to break the protocol on purpose).
struct SoftRig {
    static constexpr std::uint64_t kGuestBase = 0x40000000;
    static constexpr std::uint64_t kHostBase = 0x7f0000000000;
    static std::size_t auto_frames(const SoftRunConfig& config);

    // `frames`: the total (tables and data; SoftFrames::table_frames of it
    // go to tables, at most a quarter).
    SoftRig(const SoftRunConfig& config, ShadowConfig policies, std::size_t frames = 0,
            TlbShootdown* shootdown = nullptr);
    SoftFrames frames;
    HostAddressSpace host;
    SoftVcpuSystem system;
    ShadowMmu mmu;
    SoftRunResult run(const SoftRunConfig& config) { return system.run(config); }
};

} // namespace hv::mmu
