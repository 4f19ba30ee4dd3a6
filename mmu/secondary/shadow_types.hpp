#pragma once
// The vocabulary of the shadow MMU (shadow_mmu.hpp): its policies and
// configuration, what a fault can end with, the shootdown interface a zap
// calls, and the per-vCPU counters.
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
#include "mmu/base/cost.hpp"
#include "mmu/base/vcpu_mask.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>
#include <string_view>

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
    // as young and keeps its bit (zapping young entries instead, as KVM does
    // without A/D bits, would cost a shootdown to every vCPU per aged range).
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
    void add(Cost c) {
        lock_acquisitions += c.locks;
        shared_atomics += c.shared_atomics;
    }
    void add_host(Cost c) {
        host_lock_acquisitions += c.locks;
        host_shared_atomics += c.shared_atomics;
    }
    // Counts how a fault ended (installs are counted where the entry is
    // published: a fault that finds its entry present installs nothing).
    FaultResult count(FaultResult r) {
        switch (r) {
        case FaultResult::Installed: break;
        case FaultResult::Retry: ++retries; break;
        case FaultResult::NoMemslot: ++no_memslot; break;
        case FaultResult::Refused: ++refused; break;
        case FaultResult::OutOfFrames: ++out_of_frames; break;
        }
        return r;
    }
    // What happened since the snapshot `before` of the same counters: every
    // count minus before's; max_batch, a high-water mark, stays this one's.
    ShadowCounters since(const ShadowCounters& before) const;
};

} // namespace hv::mmu
