#pragma once
// The secondary MMU: x86-64 shadow tables over the frame space, filled by
// fault() from memslots plus the host tables, kept coherent by the notifier
// callbacks, with a reverse map per 4 KiB frame and zaps in batches.
//
// Policies (DESIGN.md), chosen at construction:
//  lock       Global: one mutex for faults and zaps (KVM's 2008 mmu_lock).
//             Rw: faults share a reader lock and publish entries with
//                 compare-exchange; zaps take it exclusively (the TDP MMU).
//             Split: one lock per 512-entry leaf table (Linux split PT locks).
//  coherence  Seq: invalidate_range_start bumps an in-progress count and
//                 widens the hull of in-progress guest ranges, _end bumps a
//                 sequence number; a fault snapshots the sequence before
//                 resolving the host address and retries if an invalidation
//                 in progress covers its page or the sequence moved (KVM).
//             PtLock: the host lookup and the install happen under the host
//                 PT lock (the 2008 #v5 patch); range invalidations still
//                 refuse installs in their hull while in progress.
//             RangeActive: any active range makes faults back off (the GRU
//                 driver); before installing, the fault re-reads the host
//                 translation under the secondary lock and retries if it changed.
// A zap clears at most `batch` entries per lock hold (0 = unlimited), drops
// the lock, and sends one shootdown per batch to the vCPUs that may cache a
// zapped entry: every vCPU that installed into, or walked, the entry's leaf
// table (a vCPU's bit is set before it can read an entry of the table).
#include "mmu/base/vcpu_mask.hpp"
#include "mmu/host/host_address_space.hpp"
#include "mmu/secondary/memslots.hpp"
#include "mmu/secondary/rmap.hpp"
#include "mmu/sync/hand_over_mutex.hpp"
#include "mmu/sync/reader_slot_lock.hpp"
#include "mmu/sync/sched_point.hpp"

#include <atomic>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string_view>
#include <shared_mutex>
#include <span>
#include <string>
#include <vector>

namespace hv::mmu {

enum class LockPolicy { Global, Rw, Split };
enum class CoherencePolicy { Seq, PtLock, RangeActive };
const char* to_string(LockPolicy p);
const char* to_string(CoherencePolicy p);
// The policy whose to_string() is `name`; nullopt for any other text.
std::optional<LockPolicy> lock_policy_named(std::string_view name);
std::optional<CoherencePolicy> coherence_policy_named(std::string_view name);

enum class FaultResult {
    Installed,  // the entry is present (installed by this call or already there)
    Retry,      // raced with an invalidation; fault again
    NoMemslot,  // the guest address is outside every memslot
    Refused,    // the host mapping refuses the access (e.g. write to read-only)
    OutOfFrames // no frame for a host page or a shadow table
};
const char* to_string(FaultResult r);

struct ShadowConfig {
    LockPolicy lock = LockPolicy::Rw;
    CoherencePolicy coherence = CoherencePolicy::Seq;
    std::size_t batch = 512; // entries per lock hold during a zap; 0 = unlimited
    std::uint32_t vcpus = 1;
    // The tables are walked by real CPUs (a KVM guest): entries are installed
    // accessed and, when writable, dirty, so the CPU never writes them; an
    // A/D update racing a zap could otherwise write a zapped entry back (on
    // CPUs or emulators that do not update A/D bits with a locked compare).
    // Aging then cannot see the guest's accesses: every present entry counts
    // as young and keeps its bit. (Zapping young entries instead, as KVM
    // does without A/D bits, costs a shootdown to every vCPU per aged range;
    // under the nested host's 100 ms shootdowns that starved the guests.)
    bool cpu_walks = false;
};

// Receives one TLB shootdown per zap batch. `pages` are the guest addresses
// whose entries were cleared; implementations flush them (or everything) on
// each target and return only when every target acknowledged.
class TlbShootdown {
public:
    virtual ~TlbShootdown() = default;
    virtual void shootdown(const VcpuMask& targets, std::span<const std::uint64_t> pages) = 0;
};

// Per-vCPU counters, written only by that vCPU's faults (no shared writes);
// zap counters live in the zapping thread's slot (index `vcpus`).
// lock_acquisitions and shared_atomics count the shadow MMU's own work
// (policy lock, rmap, shootdown masks, creating leaf tables); host_* count
// what the host fault underneath cost (PT locks; on a fresh page the region
// lock, the frame allocator and new host tables). "Shared" means a cache
// line more than one vCPU writes by design. Per-frame data (the rmap's head,
// a leaf table's split lock and mask pointer) sits in line-aligned
// arrays, 8 to 16 frames to a line; a line counts as private to a vCPU only
// while FrameSpace::line_owner() says its frames all came to that vCPU in
// one aligned chunk, so false sharing between neighbouring frames of
// different vCPUs is counted as the sharing it is.
struct ShadowCounters {
    std::uint64_t faults = 0, installs = 0, retries = 0, no_memslot = 0, refused = 0, out_of_frames = 0;
    std::uint64_t lock_acquisitions = 0, shared_atomics = 0;
    std::uint64_t host_lock_acquisitions = 0, host_shared_atomics = 0;
    std::uint64_t zaps = 0, batches = 0, shootdowns = 0, shootdown_targets = 0, max_batch = 0;
    std::uint64_t walk_registrations = 0; // walk() added the vCPU to a leaf table's shootdown targets
    std::uint64_t mask_departures = 0;    // leave_table() took the vCPU out of a leaf table's targets
    std::uint64_t resumed_batches = 0;    // zap batches that went on with a range the previous batch left full
    ShadowCounters& operator+=(const ShadowCounters& o);
    // What happened since the snapshot `before` of the same counters: every
    // count minus before's; max_batch, a high-water mark, stays this one's.
    ShadowCounters since(const ShadowCounters& before) const;
};

class ShadowMmu final : public MmuNotifier {
public:
    using Pte = X86PteFormat;
    ShadowMmu(HostAddressSpace& host, ShadowConfig config, TlbShootdown* shootdown = nullptr);
    ~ShadowMmu() override;
    ShadowMmu(const ShadowMmu&) = delete;
    ShadowMmu& operator=(const ShadowMmu&) = delete;

    // Memslot changes zap what the slot covered; they throw MemslotError on bad slots.
    void add_memslot(const Memslot& slot);
    void alias_memslot(std::uint32_t existing, std::uint32_t id, std::uint64_t guest_start);
    void remove_memslot(std::uint32_t id);
    // A static range: guest pages [guest_start, +size) mapped for good onto
    // frames first_frame.. (the code, stacks and runtime of a KVM guest in
    // shadow mode, identity-mapped). No memslot may overlap it; zaps, the
    // rmap and the notifiers never touch it; its entries carry kStaticBit.
    // The frames must lie outside the frame space's allocatable range.
    // Throws MemslotError on a bad or overlapping range, or when the frame
    // space has no frame left for a table (nothing stays mapped then).
    void map_static(std::uint64_t guest_start, std::uint64_t size, Pfn first_frame, bool writable);
    static constexpr std::uint64_t kStaticBit = 1ull << 9; // ignored by the CPU in a PTE

    FaultResult fault(std::uint32_t vcpu, std::uint64_t guest_address, Access access);
    // A vCPU's table walk (a TLB refill): the present entry for the guest
    // page, or 0. The vCPU joins the leaf table's shootdown targets first, so
    // every later zap of an entry it may cache reaches it.
    std::uint64_t walk(std::uint32_t vcpu, std::uint64_t guest_address);
    // The vCPU holds no translation from the leaf table that maps
    // `guest_address` and is not walking it: it leaves the table's shootdown
    // targets, so zaps there stop interrupting it until its next walk joins
    // again. Only for a vCPU whose TLB the caller keeps (the software vCPUs,
    // ShadowConfig::cpu_walks false); a CPU that walks the tables itself
    // joins only through its faults and must stay.
    void leave_table(std::uint32_t vcpu, std::uint64_t guest_address);

    Pfn root() const { return table_.root(); }
    const RadixTable<Pte>& table() const { return table_; }
    // The present secondary entry for a guest page, or 0.
    std::uint64_t entry(std::uint64_t guest_address) const;
    const Rmap& rmap() const { return rmap_; }
    const ShadowConfig& config() const { return config_; }
    std::vector<Memslot> memslots() const;
    // The host address a guest address maps to through the memslots.
    std::optional<std::uint64_t> guest_to_host(std::uint64_t guest_address) const;
    HostAddressSpace& host() { return host_; }

    // Zaps every entry in the guest range; returns how many were present.
    std::size_t zap_guest_range(std::uint64_t start, std::uint64_t end);
    // Zaps every entry mapping `pfn`, found through the rmap.
    std::size_t zap_frame(Pfn pfn);

    ShadowCounters counters() const;       // the sum over all slots
    ShadowCounters fault_counters() const; // the sum over the vCPUs' slots only
    ShadowCounters zap_counters() const { return counters_[config_.vcpus].c; } // zaps, memslot changes
    // Consistency check, for quiescent states (no fault or host operation
    // running): every present entry agrees with memslots plus host tables and
    // has its rmap link, and the rmap holds no other links. Returns the
    // problems found, one line each.
    std::vector<std::string> audit();
    const ShadowCounters& vcpu_counters(std::uint32_t vcpu) const { return counters_[vcpu].c; }

    // Test hook: runs in fault() after the sequence snapshot and the host
    // lookup, before the install, so tests can force an invalidation there.
    std::function<void(std::uint32_t vcpu, std::uint64_t guest_address)> after_host_lookup;

    // MmuNotifier
    StartResult invalidate_range_start(HostRange range, InvalidateEvent event, bool blockable) override;
    void invalidate_range_end(HostRange range, InvalidateEvent event) noexcept override;
    void invalidate_page(std::uint64_t host_address, InvalidateEvent event) override;
    bool clear_young(HostRange range) override;
    bool test_young(HostRange range) override;
    void release() override;

private:
    // A shootdown mask on its own cache lines.
    struct alignas(64) PaddedMask {
        VcpuMask mask;
    };
    static constexpr std::size_t kMaskSlab = 32; // masks allocated at once per vCPU
    struct alignas(64) PaddedCounters {
        ShadowCounters c;
        // The vCPU's masks for the leaf tables it is first to use, allocated
        // kMaskSlab at a time (one heap allocation per 32 tables, not per
        // table); freed with the MMU. Used only by the slot's own vCPU.
        std::vector<std::unique_ptr<PaddedMask[]>> slabs;
        std::size_t slab_used = kMaskSlab;
        LeafCache leaf; // the vCPU's last leaf table (leaf tables are never freed while the MMU lives)
    };
    class PolicyLock; // the lock a fault or a zap batch holds, per policy
    struct Snapshot {
        std::uint64_t seq, slots_gen; // taken when the fault began
    };
    FaultResult install(std::uint32_t vcpu, std::uint64_t ga, const Memslot& slot, HostTranslation t, Access access,
                        Snapshot snap, std::uint64_t ha);
    std::size_t zap_ranges(std::span<const GuestRange> ranges, ShadowCounters& c);
    // The table's shootdown mask, created (from `vcpu`'s slab) if it has none.
    VcpuMask& mask_for_table(Pfn table, std::uint32_t vcpu);
    // True when `pfn`'s per-frame lines hold only frames `vcpu` was given.
    bool line_private(Pfn pfn, std::uint32_t vcpu) const { return host_.line_owner(pfn) == vcpu; }
    // Where the tables live; every entry store is followed by frames().mirror().
    const FrameSpace& frames() const { return host_.frames(); }
    std::vector<GuestRange> guest_ranges(HostRange range) const; // the memslots' view of a host range
    ShadowCounters& zap_slot() { return counters_[config_.vcpus].c; }
    void begin_invalidation(std::span<const GuestRange> ranges); // caller holds zap_mutex_
    // An invalidation's start: marked in progress, then zapped (caller holds
    // zap_mutex_); and its end: the sequence advanced, then the count dropped.
    void invalidate_guest(std::span<const GuestRange> ranges);
    void end_invalidation();
    bool invalidation_covers(std::uint64_t guest_address) const;
    // Range-active: an invalidation is in progress anywhere, so installs back off.
    bool range_active_blocks() const;
    void wait_no_invalidation(); // caller holds zap_mutex_
    void refuse_static_overlap(std::uint64_t start, std::uint64_t end, const char* what) const; // holds slots_lock_
    struct StaticRange {
        std::uint64_t start, end;
        Pfn first_frame;
        bool writable;
    };
    // The entry map_static writes for `frame`; it never changes after.
    static std::uint64_t static_entry(Pfn frame, bool writable);

    HostAddressSpace& host_;
    ShadowConfig config_;
    TlbShootdown* shootdown_;
    RadixTable<Pte> table_;
    Rmap rmap_;
    MemslotTable memslots_;
    std::vector<StaticRange> statics_; // under slots_lock_
    // Memslot changes are rare: writers exclusive, and readers of vCPU slots
    // use no locked instruction (ReaderSlotLock::Mode::RareWriters).
    mutable ReaderSlotLock slots_lock_;

    HandOverMutex global_lock_;          // LockPolicy::Global
    ReaderSlotLock rw_lock_;             // LockPolicy::Rw
    LineArray<PtLock> table_locks_;                // LockPolicy::Split, by leaf table pfn
    LineArray<std::atomic<VcpuMask*>> table_masks_; // by leaf table pfn
    // Serialises zaps against each other (batching state). A zap waits for
    // acknowledgements holding it, so under the schedule fuzzer its waits
    // go through the scheduler.
    sched::Mutex zap_mutex_;

    std::atomic<std::uint64_t> invalidate_seq_{0};
    std::atomic<std::uint64_t> slots_gen_{0}; // memslot removals
    std::atomic<std::int64_t> invalidate_in_progress_{0};
    std::atomic<std::uint64_t> invalidate_lo_{0}, invalidate_hi_{0}; // hull of in-progress guest ranges
    std::unique_ptr<PaddedCounters[]> counters_; // vcpus + 1 (the last is for zaps)
    bool subscribed_ = false;
};

} // namespace hv::mmu
