#pragma once
// The primary MMU model: host page tables in x86-64 format over the frame
// space, with one lock per 512-entry leaf table (split PT locks) and a
// reader/writer lock for the upper levels, and the host operations that
// change mappings (unmap, protect, migrate, merge, swap out, age), each of
// which fires the notifier chain.
//
// Notifier sequence of each operation, exactly:
//   unmap(r)       start(r, Unmap)   ; clear PTEs, free frames      ; end(r, Unmap)
//   protect(r, w)  start(r, Protect) ; set/clear RW on present PTEs ; end(r, Protect)
//   migrate(a)     start(p, Migrate) ; copy frame, repoint PTE      ; end(p, Migrate)      p = the page of a
//   merge(a, b)    start(pb, Merge)  ; b -> a's frame, both RO      ; end(pb, Merge)
//                  (a keeps its frame but turns read-only, which also needs
//                   an invalidation: start(pa, Merge)/end(pa, Merge) bracket
//                   the whole operation, outermost)
//   swap_out(a)    start(p, SwapOut) ; save frame, PTE -> swap entry ; end(p, SwapOut)
//   write fault on a merged page (copy-on-write break):
//                  start(p, Clear)   ; copy to a new frame, RW       ; end(p, Clear)
//   age(r)         clear_young(r) on the chain, then test-and-clear A bits in the host PTEs
// In page-at-a-time mode (the 2008 shape) unmap, protect, migrate and
// swap_out instead fire invalidate_page(a) for each page after changing its
// PTE while still holding that page's PT lock.
// PT locks are never held while start() runs (start may block on secondary
// MMU locks); they are taken after it.
//
// Locking: upper-level tables are never freed while the address space lives
// (RadixTable publishes new tables with compare-exchange), so walks need no
// lock above the leaf; each leaf table has its PT lock. The region map
// (which ranges are mapped, and writable) has a reader/writer lock that only
// faults on non-present pages read: a present PTE answers by itself. It is a
// ReaderSlotLock with one reader slot per CPU index: region changes (map,
// protect) are rare, and a fault that passes its CPU writes only its own
// slot's line (Linux's mmap_lock, or its per-VMA lock, is one counter every
// faulting CPU writes; this model does not copy that cost). Frames for
// pages and tables come from the faulting CPU's frame cache
// (FrameSpace::allocate(cpu)), and the per-frame PT locks and map counts are
// line-aligned arrays, so a CPU faulting its own range writes no cache line
// another CPU writes except when a refill takes the allocator lock or a new
// leaf table is linked (HostFaultResult counts both).
#include "mmu/base/frame_space.hpp"
#include "mmu/base/vcpu_mask.hpp"
#include "mmu/host/notifier_chain.hpp"
#include "mmu/sync/pt_lock.hpp"
#include "mmu/sync/reader_slot_lock.hpp"
#include "mmu/table/entry_format.hpp"
#include "mmu/table/radix_table.hpp"

#include <atomic>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <unordered_map>
#include <vector>

namespace hv::mmu {

enum class Access { Read, Write };

enum class HostFaultStatus {
    Mapped,      // the page is present with the access allowed
    NoMapping,   // no anonymous mapping covers the address (SIGSEGV)
    ReadOnly,    // a write to a page whose mapping is read-only
    OutOfFrames, // the frame space is exhausted
};
const char* to_string(HostFaultStatus s);

struct HostTranslation {
    Pfn pfn = 0;
    bool writable = false;
};

struct HostFaultResult {
    HostFaultStatus status = HostFaultStatus::NoMapping;
    HostTranslation translation;
    // What this fault cost, for the caller's per-vCPU counters: locks taken
    // and read-modify-writes on cache lines other CPUs write: the region
    // lock from kAnyCpu (a CPU's own reader slot is private), the allocator
    // lock on a frame-cache refill, the link of a new table into a table
    // other CPUs' tables are linked into, a PT lock whose line is not the
    // CPU's own (FrameSpace::line_owner), the notifier chain of a
    // copy-on-write break.
    Cost cost;
};

// A snapshot summed over the per-CPU counter slots.
struct HostCounters {
    std::uint64_t faults = 0, zero_fills = 0, swap_ins = 0, cow_breaks = 0;
    std::uint64_t unmapped = 0, protected_pages = 0, migrated = 0, merged = 0, swapped_out = 0, aged = 0;
    std::uint64_t pt_lock_acquisitions = 0;
};

class HostAddressSpace {
public:
    using Pte = X86PteFormat;
    // Callers that pass a CPU index (0..kMaxVcpus-1) count into that CPU's
    // own counter slot, and must be the one thread acting as that CPU at the
    // time (a vCPU's); kAnyCpu shares one slot among all other callers.
    static constexpr std::uint32_t kAnyCpu = ~0u;

    // page_at_a_time: fire invalidate_page per page (2008) instead of range start/end.
    // Tables and data pages alike come from `frames`.
    explicit HostAddressSpace(FrameSpace& frames, bool page_at_a_time = false);
    // Tables (these and any secondary MMU's built over frames()) from
    // `tables`, data pages from `data`: two allocators over the same memory
    // (pfn N is the same bytes in both) with disjoint allocatable ranges, so
    // a KVM guest can be given the table frames read-only and the data
    // frames writable. Throws std::invalid_argument unless both cover the
    // same memory and their allocatable ranges are disjoint.
    HostAddressSpace(FrameSpace& tables, FrameSpace& data, bool page_at_a_time = false);
    ~HostAddressSpace();
    HostAddressSpace(const HostAddressSpace&) = delete;
    HostAddressSpace& operator=(const HostAddressSpace&) = delete;

    NotifierChain& notifiers() { return chain_; }
    // Where tables come from; its bytes()/entries() serve every frame.
    FrameSpace& frames() { return frames_; }
    // Where data pages come from (frames() unless given apart).
    FrameSpace& data_frames() { return data_; }
    const FrameSpace& data_frames() const { return data_; }
    // FrameSpace::line_owner of pfn, asked of the allocator that hands it out.
    std::optional<std::uint32_t> line_owner(Pfn pfn) const {
        const bool data = pfn >= data_.first_allocatable() && pfn < data_.end_allocatable();
        return (data ? data_ : frames_).line_owner(pfn);
    }

    // Anonymous demand-zero mapping of [start, end) (4 KiB aligned, inside
    // 48 bits, not overlapping an existing mapping); throws std::invalid_argument.
    void map_anonymous(HostRange range, bool writable);

    // A host page fault (what get_user_pages does for KVM): makes the page
    // present (zero fill, swap in, copy-on-write break) and returns its frame.
    HostFaultResult fault(std::uint64_t address, Access access, std::uint32_t cpu = kAnyCpu);
    // The current translation without faulting; nullopt when not present.
    std::optional<HostTranslation> lookup(std::uint64_t address) const;
    // True when the page is not present but its contents wait in swap.
    bool swapped_out(std::uint64_t address) const;

    // RAII lock of the leaf page table holding `address` (the split PT
    // lock), for callers that must read a PTE and act on it atomically with
    // respect to host operations (the `ptlock` coherence policy). Empty when
    // no leaf table exists for the address.
    class PteGuard {
    public:
        PteGuard() = default;
        PteGuard(PteGuard&& o) noexcept
            : lock_(std::exchange(o.lock_, nullptr)), entry_(o.entry_), shared_rmws_(o.shared_rmws_) {}
        PteGuard& operator=(PteGuard&&) = delete;
        ~PteGuard() {
            if (lock_) lock_->unlock();
        }
        explicit operator bool() const { return lock_ != nullptr; }
        // What taking and releasing this lock costs the CPU that took it:
        // the lock, and 0 shared-line atomics when the lock's line is that
        // CPU's own (FrameSpace::line_owner), else 2.
        Cost cost() const { return {1, shared_rmws_}; }
        std::uint64_t pte() const { return std::atomic_ref<std::uint64_t>(*entry_).load(std::memory_order_acquire); }
        // Sets the accessed bit (and dirty for a write) of a present PTE, as
        // the host's own fault path does for the page it hands out.
        void mark_accessed(Access access) {
            std::atomic_ref<std::uint64_t> e(*entry_);
            const std::uint64_t old = e.load(std::memory_order_acquire);
            if (!Pte::present(old)) return;
            std::uint64_t updated = Pte::with_accessed(old, true);
            if (access == Access::Write) updated = Pte::with_dirty(updated, true);
            if (updated != old) e.store(updated, std::memory_order_release);
        }

    private:
        friend class HostAddressSpace;
        PteGuard(PtLock* l, std::uint64_t* e, std::uint32_t shared_rmws)
            : lock_(l), entry_(e), shared_rmws_(shared_rmws) {}
        PtLock* lock_ = nullptr;
        std::uint64_t* entry_ = nullptr;
        std::uint32_t shared_rmws_ = 0;
    };
    PteGuard lock_pte(std::uint64_t address, std::uint32_t cpu = kAnyCpu);

    // Host operations; each returns the number of pages it changed.
    std::size_t unmap(HostRange range);
    std::size_t protect(HostRange range, bool writable);
    bool migrate(std::uint64_t address);                 // false: not present, or out of frames
    bool merge(std::uint64_t keep, std::uint64_t other); // false: not both present, same frame, or contents differ
    bool swap_out(std::uint64_t address);                // false: not present or shared
    bool age(HostRange range);                           // true when any page was young (host or secondary)

    // Software bits of host PTEs (bits 9-11 are ignored by the CPU).
    static constexpr std::uint64_t kMergedBit = 1ull << 9;  // present: frame shared by merge (copy-on-write)
    static constexpr std::uint64_t kSwapBit = 1ull << 10;   // not present: bits 12+ hold a swap slot
    static bool is_swap_entry(std::uint64_t pte) { return !Pte::present(pte) && (pte & kSwapBit); }

    HostCounters counters() const;
    std::size_t swap_slots_in_use() const;
    std::uint32_t map_count(Pfn pfn) const { return map_count_[pfn].load(std::memory_order_relaxed); }
    // Present host PTEs in [start, end), for audits: calls fn(address, pte).
    template <class Fn>
    void for_each_present(HostRange range, Fn&& fn) const;

private:
    struct Region {
        std::uint64_t end;
        bool writable;
    };
    enum class Count { Faults, ZeroFills, SwapIns, CowBreaks, Unmapped, Protected, Migrated, Merged, SwappedOut, Aged,
                       PtLocks, N };
    struct alignas(64) CounterSlot {
        std::atomic<std::uint64_t> v[static_cast<std::size_t>(Count::N)] = {};
        LeafCache leaf; // the CPU's last leaf table (host leaf tables are never freed)
    };
    // addr's leaf slot, through `cpu`'s leaf cache when it has one.
    std::optional<RadixTable<Pte>::Slot> find_leaf(std::uint64_t addr, std::uint32_t cpu) {
        if (cpu >= kMaxVcpus) return table_.find_leaf(addr);
        LeafCache& cache = slots_[cpu].leaf;
        if (const auto t = cache.table_for(addr)) return table_.leaf_slot(*t, addr);
        auto slot = table_.find_leaf(addr);
        if (slot) cache.remember(addr, slot->table);
        return slot;
    }
    // A CPU's own slot is written by the thread acting as that CPU only (as
    // ShadowCounters are): a plain increment, no locked instruction on the
    // fault path. The kAnyCpu slot is shared: an atomic add.
    void count(Count which, std::uint64_t n = 1, std::uint32_t cpu = kAnyCpu) {
        if (cpu < kMaxVcpus) {
            auto& v = slots_[cpu].v[static_cast<std::size_t>(which)];
            v.store(v.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
        } else {
            slots_[kMaxVcpus].v[static_cast<std::size_t>(which)].fetch_add(n, std::memory_order_relaxed);
        }
    }
    const Region* region_for(std::uint64_t address) const; // caller holds regions_lock_
    PtLock& pt_lock(Pfn leaf_table) { return pt_locks_[leaf_table]; }
    // Shared read-modify-writes of taking and releasing `table`'s PT lock
    // from `cpu`: 0 when the lock's line holds only that CPU's frames.
    std::uint32_t pt_lock_rmws(Pfn table, std::uint32_t cpu) const { return frames_.line_owner(table) == cpu ? 0 : 2; }
    std::optional<Pfn> new_frame(std::uint32_t cpu = kAnyCpu, Cost* cost = nullptr);
    void put_frame(Pfn pfn); // drop one mapping; frees the frame at zero
    HostFaultResult break_cow(std::uint64_t address, std::uint32_t cpu);
    std::optional<HostFaultResult> fault_present(std::uint64_t* entry, Pfn table, std::uint64_t address, Access access,
                                                 std::uint32_t cpu);
    template <class Fn>
    void for_each_locked_pte(HostRange range, Fn&& fn);
    template <class Change>
    std::optional<Pfn> change_page(std::uint64_t address, InvalidateEvent event, Change&& change);
    void fire_page(std::uint64_t address, InvalidateEvent event) { chain_.invalidate_page(address, event); }

    FrameSpace& frames_;
    FrameSpace& data_;
    const bool page_at_a_time_;
    NotifierChain chain_;
    RadixTable<Pte> table_;
    LineArray<PtLock> pt_locks_;   // one per frame: a leaf table's lock is pt_locks_[its pfn]
    LineArray<std::atomic<std::uint32_t>> map_count_; // host PTEs mapping each frame
    // Reader slot = CPU index (kAnyCpu: the shared slot); map and protect are
    // the rare writers.
    mutable ReaderSlotLock regions_lock_{kMaxVcpus, ReaderSlotLock::Mode::RareWriters};
    std::map<std::uint64_t, Region> regions_; // keyed by start
    mutable std::mutex swap_mutex_;
    std::unordered_map<std::uint64_t, std::vector<std::uint8_t>> swap_;
    std::uint64_t next_swap_slot_ = 1;
    std::unique_ptr<CounterSlot[]> slots_; // kMaxVcpus + 1: the last is kAnyCpu's
};

template <class Fn>
void HostAddressSpace::for_each_present(HostRange range, Fn&& fn) const {
    const_cast<RadixTable<Pte>&>(table_).for_each_leaf(range.start, range.end, 0, [&](std::uint64_t addr, const auto& slot) {
        fn(addr, std::atomic_ref<std::uint64_t>(*slot.entry).load(std::memory_order_acquire));
    });
}

} // namespace hv::mmu
