#pragma once
// `vmm bench fault`: software vCPUs (threads) fault fresh pages into the
// shadow MMU, `pages` faults each:
//  disjoint  every vCPU faults its own `pages` pages, starting on its own
//            2 MiB boundary, so no two vCPUs share a leaf table (host or
//            shadow) and what is measured is the MMU, not table sharing;
//  shared    every vCPU faults the same `pages` pages (the first fault of a
//            page installs it, the others find it present), each starting
//            at its own offset so the first touches are spread out;
// sweeping the vCPU count under each lock and coherence policy. Throughput
// is total faults over the wall time of the faulting phase (see
// fault_once()). Next to each vCPU count, with as many threads and the same
// pages per thread: Linux first-touch faults of anonymous memory and
// userfaultfd (UFFDIO_COPY) demand paging, on this machine.
//
// Before the sweep, one `warm` row per policy pair (1 vCPU): installs into
// the shadow MMU of pages whose host page is already present and whose
// shadow leaf table exists, so a fault is the memslot lookup, the host
// lookup of a present page, and the shadow install (walk, policy lock,
// coherence check, publish, rmap add). Its ns_per_fault is the median over
// batches of kWarmBatch consecutive faults of the batch's mean (one clock
// read per batch, so the clock costs under 1 ns per fault), median over
// repeats; this is the single-thread install latency (target T1,
// docs/results.md).
//
// Per fault it counts lock acquisitions, read-modify-writes on cache lines
// more than one vCPU writes (the shadow MMU's own, and the host's:
// region lock, frame allocator) and retries: these do not depend on the
// core count.
#include "vmm/bench/bench_report.hpp"

#include "mmu/secondary/shadow_mmu.hpp"

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace hv::bench {

struct FaultBenchConfig {
    std::vector<std::uint32_t> vcpus{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024};
    std::vector<mmu::LockPolicy> locks{mmu::LockPolicy::Global, mmu::LockPolicy::Rw, mmu::LockPolicy::Split};
    std::vector<mmu::CoherencePolicy> coherences{mmu::CoherencePolicy::Seq, mmu::CoherencePolicy::PtLock,
                                                 mmu::CoherencePolicy::RangeActive};
    // Faults per vCPU (and pages per Linux thread). Disjoint: each vCPU's
    // pages start on their own 2 MiB boundary, so the region is vcpus x
    // pages rounded up to 512 (the host maps it lazily: only the pages
    // faulted get frames).
    std::uint64_t pages = 512;
    unsigned repeat = 3;
    bool linux_baseline = true;
    std::function<void(std::size_t done, std::size_t total, const std::string& what)> progress;
};

// Faults per batch timed together for the warm rows' median.
inline constexpr std::uint64_t kWarmBatch = 32;
// The largest region: vCPUs x pages (each vCPU's rounded up to 2 MiB), 4 GiB
// as the Linux rows allow.
inline constexpr std::uint64_t kMaxFaultRegionPages = std::uint64_t{1} << 20;

// The --quick sweep: 1, 2, 64 and 1024 vCPUs, 16 pages each, one repeat: a
// smoke test of every path and count (a few seconds here, under a minute
// under ThreadSanitizer). 16 faults per vCPU are too few to time 1024 vCPUs:
// thread switches dominate there; the throughput figures are the default
// sweep's.
FaultBenchConfig quick_fault_config();

// Throws std::invalid_argument for vCPU counts outside 1..1024, pages 0, a
// region above kMaxFaultRegionPages, or repeat 0.
BenchReport run_fault_bench(const FaultBenchConfig& config);

} // namespace hv::bench
