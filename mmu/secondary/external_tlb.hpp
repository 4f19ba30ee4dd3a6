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
//   faults the page in through the host (host.fault), then
//     1. reserve: under the vCPU's TLB lock, if still no range is active,
//        writes the entry as *pending* (no hit uses it; any flush covering
//        its page cancels it);
//     2. re-validate: host.lookup() must still give what the fault gave
//        (same frame, same write permission);
//     3. commit: under the TLB lock, if the reservation is still there and
//        no range is active, the entry becomes usable.
//   Anything failing answers Retry. The counter check at (1) closes the
//   window where a start has flushed this TLB but the host PTE has not
//   changed yet; (2) catches a whole start..end (a migration, say) that
//   completed between the host fault and the reservation; a flush after
//   (1) cancels the reservation (or, after (3), drops the entry).
//   Why that suffices: a start increments the counter before it takes any
//   TLB lock to flush, so a reservation either precedes that flush (and is
//   cancelled by it) or sees the counter. invalidate_page (the 2008 shape)
//   runs after the host PTE changed and takes the TLB lock to flush: if the
//   lookup in (2) read the old PTE, that flush comes after (1), so it cancels
//   the reservation or drops the committed entry.
//   Why a reservation rather than calling host.lookup() with the TLB lock
//   held: host.lookup() takes the host's upper-level reader lock, and the
//   host fires invalidate_page (which takes TLB locks) while holding that
//   lock: TLB lock -> host lock here and host lock -> TLB lock there is a
//   lock-order inversion (ThreadSanitizer reports it; it is only safe while
//   that rwlock is never write-locked and prefers readers).
//
// Locking: one mutex per vCPU TLB; translations on different vCPUs share no
// lock and write no shared line (the counter is only read on a miss). A
// flush takes each vCPU's TLB lock in turn. A miss takes its TLB lock three
// times (hit check, reservation, commit). Lock order: host locks (held by the
// host around invalidate_page) -> TLB lock; nothing calls into the host with
// a TLB lock held.
//
// Cost accounting (DESIGN.md "Honest measurement"): the range-active counter
// is the only shared line an invalidation writes in this subscriber: one
// atomic RMW in start and one in end (counted in shared_atomics). Flushes
// are counted per call, not per entry (entries_dropped counts the entries).
#include "mmu/host/host_address_space.hpp"
#include "mmu/host/notifier.hpp"

#include <atomic>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

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
    std::uint64_t cancelled = 0;             // refills whose reservation a flush (or eviction) took: Retry
    std::uint64_t revalidation_failures = 0; // refills whose host.lookup no longer matched: Retry
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
    // For quiescent states (no translation or host operation running):
    // every usable entry agrees with the host's present PTE for its page
    // (same frame; writable only while the host PTE is). One that does not
    // outlived an invalidation that should have flushed it. One line per problem.
    std::vector<std::string> audit() const;

    // Test hooks, each called with (vcpu, host_address) during a refill:
    //  after_host_lookup  after host.fault() answered, before the reservation
    //                     (an invalidation here is caught by the re-validation);
    //  after_reserve      after the reservation, before host.lookup(), no lock
    //                     held (an invalidation here cancels the reservation);
    //  while_locked       at the commit, with the vCPU's TLB lock held (e.g. to
    //                     make a non-blockable start find it busy).
    std::function<void(std::uint32_t vcpu, std::uint64_t host_address)> after_host_lookup;
    std::function<void(std::uint32_t vcpu, std::uint64_t host_address)> after_reserve;
    std::function<void(std::uint32_t vcpu, std::uint64_t host_address)> while_locked;

    // MmuNotifier
    StartResult invalidate_range_start(HostRange range, InvalidateEvent event, bool blockable) override;
    void invalidate_range_end(HostRange range, InvalidateEvent event) noexcept override;
    void invalidate_page(std::uint64_t host_address, InvalidateEvent event) override;
    bool clear_young(HostRange range) override;
    bool test_young(HostRange range) override;
    void release() override;

private:
    struct Entry {
        std::uint64_t page = 0;  // host address of the page
        Pfn pfn = 0;
        std::uint64_t token = 0; // which refill reserved it (while pending)
        bool valid = false;
        bool pending = false;    // reserved by a refill, not yet usable
        bool writable = false;
        bool accessed = false;
    };
    struct SlotCounters {
        std::atomic<std::uint64_t> translations{0}, hits{0}, misses{0}, refills{0}, retries{0}, no_mapping{0},
            refused{0}, out_of_frames{0}, evictions{0}, cancelled{0}, revalidation_failures{0};
    };
    // One vCPU's TLB: its lock, its entries, its counters, on lines of its own.
    struct alignas(64) Context {
        mutable std::mutex lock;
        std::unique_ptr<Entry[]> entries; // sets_ * ways_, set-major
        std::uint32_t victim = 0;         // round-robin replacement, under lock
        std::uint64_t next_token = 0;     // refill reservations, under lock
        SlotCounters c;
    };
    struct InvalidationCounters {
        std::atomic<std::uint64_t> range_flushes{0}, page_flushes{0}, entries_dropped{0}, flush_locks{0},
            shared_atomics{0}, try_again{0};
    };

    Context& context(std::uint32_t vcpu) const;
    std::size_t set_of(std::uint64_t page) const { return (page >> 12) % sets_; }
    // The entry for page (ctx.lock held); pending reservations only if asked.
    Entry* find(Context& ctx, std::uint64_t page, bool pending_too = false) const;
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
