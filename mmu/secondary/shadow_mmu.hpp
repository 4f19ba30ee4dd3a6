#pragma once
// The secondary MMU: x86-64 shadow tables over the frame space, filled by
// fault() from memslots plus the host tables, kept coherent by the notifier
// callbacks, with a reverse map per 4 KiB frame and zaps in batches. The
// policies are in shadow_types.hpp; the lock a fault or a zap batch holds
// in policy_lock.hpp, what a fault checks before it installs in
// coherence.hpp.
//
// A zap clears at most `batch` entries per lock hold (0 = unlimited), drops
// the lock, and sends one shootdown per batch to the vCPUs that may cache a
// zapped entry: every vCPU that installed into, or walked, the entry's leaf
// table (a vCPU's bit is set before it can read an entry of the table).
//
// The code, by job: shadow_setup.cpp (construction, memslots, static
// ranges, counters), shadow_fault.cpp (fault, install, walk),
// shadow_zap.cpp (zaps on a ZapIterator), shadow_invalidate.cpp (the
// notifier callbacks and aging), shadow_audit.cpp (audit).
#include "mmu/base/vcpu_mask.hpp"
#include "mmu/host/host_address_space.hpp"
#include "mmu/secondary/coherence.hpp"
#include "mmu/secondary/fault.hpp"
#include "mmu/secondary/memslots.hpp"
#include "mmu/secondary/rmap.hpp"
#include "mmu/secondary/shadow_types.hpp"
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
    class PolicyLock;  // the lock a fault or a zap batch holds (policy_lock.hpp)
    class ZapIterator; // a zap's walk, a batch per lock hold (zap_iterator.hpp)
    struct ZapBatch;   // what one batch cleared (shadow_zap.cpp)

    // The fault path, top to bottom (shadow_fault.cpp), compiled once per
    // coherence rule (coherence.hpp); fault() picks the config's.
    template <CoherenceRule Rule>
    FaultResult handle_fault(ShadowFault& f);
    std::optional<FaultResult> find_memslot(ShadowFault& f); // fills f.slot and f.ha
    template <CoherenceRule Rule>
    FaultResult install(ShadowFault& f);
    // The leaf-table slot for f.ga, from the vCPU's leaf cache or a walk
    // that creates missing tables; nullopt when no frame was left.
    std::optional<RadixTable<Pte>::Slot> leaf_for(ShadowFault& f);
    // Publishes `fresh` at the slot unless an equal or better entry is there.
    void publish(ShadowFault& f, const RadixTable<Pte>::Slot& leaf, std::uint64_t fresh, const PolicyLock& lock);

    // The zap path (shadow_zap.cpp).
    std::size_t zap_ranges(std::span<const GuestRange> ranges, ShadowCounters& c);
    void clear_batch(ZapIterator& it, ZapBatch& batch);
    static void count_batch(const ZapBatch& batch, ShadowCounters& c);
    // An invalidation's start (caller holds zap_mutex_): marked in
    // progress, then zapped.
    void invalidate_guest(std::span<const GuestRange> ranges);

    // The table's shootdown mask, created (from `vcpu`'s slab) if it has none.
    VcpuMask& mask_for_table(Pfn table, std::uint32_t vcpu);
    // True when `pfn`'s per-frame lines hold only frames `vcpu` was given.
    bool line_private(Pfn pfn, std::uint32_t vcpu) const { return host_.line_owner(pfn) == vcpu; }
    // Where the tables live; every entry store is followed by frames().mirror().
    const FrameSpace& frames() const { return host_.frames(); }
    std::vector<GuestRange> guest_ranges(HostRange range) const; // the memslots' view of a host range
    ShadowCounters& zap_slot() { return counters_[config_.vcpus].c; }
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

    Coherence coherence_;
    std::unique_ptr<PaddedCounters[]> counters_; // vcpus + 1 (the last is for zaps)
    bool subscribed_ = false;
};

} // namespace hv::mmu
