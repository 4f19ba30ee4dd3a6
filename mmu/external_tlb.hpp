#pragma once
// ExternalTlb: a secondary MMU with no page tables of its own, only a TLB
// per context (per vCPU here), modelled on SGI's GRU driver
// (drivers/misc/sgi-gru). It translates *host* addresses directly, as the GRU
// maps a process's virtual addresses: a miss refills the entry from the host
// tables, and the MMU-notifier callbacks flush entries from every vCPU's TLB.
// It subscribes to the host address space's notifier chain on construction,
// so it can run side by side with a ShadowMmu on the same host (DESIGN.md,
// "Policies": subscribers).
//
// Coherence: the range-active counter (the GRU's ms_range_active).
//   invalidate_range_start  increments the counter, then flushes the range
//                           from every vCPU's TLB (one flush = one write to
//                           the device, counted once per call);
//   invalidate_range_end    decrements it.
//   A miss backs off (Retry) while the counter is non-zero. Otherwise it
//   faults the page in through the host (host.fault), then takes the vCPU's
//   TLB lock and, before installing, checks again that no range is active
//   and that the host translation (host.lookup) still equals the one the
//   refill obtained (same frame, same write permission); either check
//   failing answers Retry. The first re-check closes the window where a
//   start has flushed this TLB but the host PTE has not changed yet; the
//   second catches a whole start..end (a migration, say) that completed
//   between the refill's host lookup and its install.
//   Why that suffices: a start increments the counter before it takes any
//   TLB lock to flush, so an install under that lock either precedes the
//   flush (and is flushed) or sees the counter. invalidate_page (the 2008
//   shape) runs after the host PTE changed, under the host PT lock, and takes
//   the TLB lock to flush: an install that read the old PTE under the TLB lock
//   precedes that flush, so it is flushed too.
//
// Locking: one mutex per vCPU TLB; translations on different vCPUs share no
// lock and write no shared line (the counter is only read on a miss). A
// flush takes each vCPU's TLB lock in turn. Lock order: host PT lock (held
// by the host around invalidate_page) -> TLB lock -> the host's upper-level
// reader lock (host.lookup). Never call into the host's page-fault path with
// a TLB lock held.
//
// Cost accounting (DESIGN.md "Honest measurement"): the range-active counter
// is the only shared line an invalidation writes in this subscriber: one
// atomic RMW in start and one in end (counted in shared_atomics). Flushes
// are counted per call, not per entry (entries_dropped counts the entries).
#include "host_address_space.hpp"
#include "notifier.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

namespace hv::mmu {

enum class TlbStatus {
    Hit,        // the vCPU's TLB held a usable entry
    Refilled,   // a miss, refilled from the host tables
    Retry,      // a range invalidation is active or raced with the refill; translate again
    NoMapping,  // no host mapping covers the address, or the TLB was released
    Refused,    // a write to a read-only host mapping
    OutOfFrames // the host could not allocate a frame for the page
};
const char* to_string(TlbStatus s);

struct TlbResult {
    TlbStatus status = TlbStatus::NoMapping;
    Pfn pfn = 0;           // valid for Hit and Refilled
    bool writable = false; // valid for Hit and Refilled
    bool ok() const { return status == TlbStatus::Hit || status == TlbStatus::Refilled; }
};

// One TLB entry as seen by probe() (tests, audits).
struct TlbEntryView {
    Pfn pfn = 0;
    bool writable = false;
    bool accessed = false;
};

struct ExternalTlbCounters {
    // Translation side (summed over the per-vCPU slots).
    std::uint64_t translations = 0, hits = 0, misses = 0, refills = 0, retries = 0;
    std::uint64_t no_mapping = 0, refused = 0, out_of_frames = 0, evictions = 0;
    // Invalidation side.
    std::uint64_t range_flushes = 0;   // invalidate_range_start calls that flushed (one device write each)
    std::uint64_t page_flushes = 0;    // invalidate_page calls (one device write each)
    std::uint64_t entries_dropped = 0; // entries removed by flushes (all vCPUs), not evictions
    std::uint64_t flush_locks = 0;     // TLB lock acquisitions by flushes and aging (one per vCPU per call)
    std::uint64_t shared_atomics = 0;  // RMWs on the range-active counter (2 per range)
    std::uint64_t try_again = 0;       // non-blockable starts refused because a TLB lock was busy
    ExternalTlbCounters& operator+=(const ExternalTlbCounters& o);
};

class ExternalTlb final : public MmuNotifier {
public:
    // entries_per_vcpu entries per vCPU TLB (4-way set associative when it
    // is a multiple of 4, else direct mapped). Throws std::invalid_argument
    // unless 1 <= vcpus <= kMaxVcpus and entries_per_vcpu >= 1. Subscribes to
    // host.notifiers().
    ExternalTlb(HostAddressSpace& host, std::uint32_t vcpus, std::size_t entries_per_vcpu);
    // Unsubscribes (waits for the invalidations in flight). Must not run
    // inside a callback of the host's chain.
    ~ExternalTlb() override;
    ExternalTlb(const ExternalTlb&) = delete;
    ExternalTlb& operator=(const ExternalTlb&) = delete;

    TlbResult translate(std::uint32_t vcpu, std::uint64_t host_address, Access access);

    // The vCPU's entry for the page of host_address, without touching its
    // accessed bit; nullopt when it holds none.
    std::optional<TlbEntryView> probe(std::uint32_t vcpu, std::uint64_t host_address) const;
    // Valid entries in the vCPU's TLB.
    std::size_t valid_entries(std::uint32_t vcpu) const;
    // Flushes the vCPU's whole TLB (a context switch of the device context).
    void flush_vcpu(std::uint32_t vcpu);

    std::uint32_t vcpus() const { return vcpus_; }
    std::size_t entries_per_vcpu() const { return sets_ * ways_; }
    std::int64_t range_active() const { return range_active_.load(std::memory_order_acquire); }
    bool released() const { return released_.load(std::memory_order_acquire); }
    ExternalTlbCounters counters() const;
    HostAddressSpace& host() { return host_; }

    // Test hook: runs in a refill after host.fault() answered and before the
    // TLB lock is taken for the re-validation and install, so tests can force
    // an invalidation into that window.
    std::function<void(std::uint32_t vcpu, std::uint64_t host_address)> after_host_lookup;
    // Test hook: runs with the vCPU's TLB lock held, just before the
    // re-validation (e.g. to make a non-blockable start find the lock busy
    // from another thread).
    std::function<void(std::uint32_t vcpu, std::uint64_t host_address)> while_locked;

    // MmuNotifier
    StartResult invalidate_range_start(HostRange range, InvalidateEvent event, bool blockable) override;
    void invalidate_range_end(HostRange range, InvalidateEvent event) override;
    void invalidate_page(std::uint64_t host_address, InvalidateEvent event) override;
    bool clear_young(HostRange range) override;
    bool test_young(HostRange range) override;
    void release() override;

private:
    struct Entry {
        std::uint64_t page = 0; // host address of the page
        Pfn pfn = 0;
        bool valid = false;
        bool writable = false;
        bool accessed = false;
    };
    struct SlotCounters {
        std::atomic<std::uint64_t> translations{0}, hits{0}, misses{0}, refills{0}, retries{0}, no_mapping{0},
            refused{0}, out_of_frames{0}, evictions{0};
    };
    // One vCPU's TLB: its lock, its entries, its counters, on lines of its own.
    struct alignas(64) Context {
        mutable std::mutex lock;
        std::unique_ptr<Entry[]> entries; // sets_ * ways_, set-major
        std::uint32_t victim = 0;         // round-robin replacement, under lock
        SlotCounters c;
    };
    struct InvalidationCounters {
        std::atomic<std::uint64_t> range_flushes{0}, page_flushes{0}, entries_dropped{0}, flush_locks{0},
            shared_atomics{0}, try_again{0};
    };

    Context& context(std::uint32_t vcpu) const;
    std::size_t set_of(std::uint64_t page) const { return (page >> 12) % sets_; }
    Entry* find(Context& ctx, std::uint64_t page) const; // ctx.lock held
    // Drops the entries of [start, end) from ctx (lock held); returns how many.
    std::size_t flush_locked(Context& ctx, std::uint64_t start, std::uint64_t end);
    std::size_t flush_all_contexts(std::uint64_t start, std::uint64_t end);
    TlbResult finish(SlotCounters& c, TlbStatus s);

    HostAddressSpace& host_;
    const std::uint32_t vcpus_;
    std::size_t ways_ = 1;
    std::size_t sets_ = 1;
    std::unique_ptr<Context[]> contexts_;
    // The GRU's ms_range_active: non-zero while any range invalidation is
    // between start and end. Alone on its line: every invalidation writes it,
    // every miss reads it.
    alignas(64) std::atomic<std::int64_t> range_active_{0};
    // Read (under a TLB lock) by every translation, written once: its own line.
    alignas(64) std::atomic<bool> released_{false};
    alignas(64) InvalidationCounters inv_;
};

} // namespace hv::mmu
