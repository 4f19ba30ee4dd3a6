#pragma once
// `vmm bench fault`: software vCPUs (threads) fault fresh pages into the
// shadow MMU, `pages / vcpus` faults each: on its own pages (disjoint) or on
// the same `pages / vcpus` pages as every other vCPU (shared),
// sweeping the vCPU count under each lock and coherence policy. Next to each
// vCPU count: Linux first-touch faults of anonymous memory and userfaultfd
// (UFFDIO_COPY) demand paging with as many threads, on this machine. Per
// fault it counts lock acquisitions, read-modify-writes on cache lines more
// than one vCPU writes, and retries: these do not depend on the core count.
#include "bench_report.hpp"

#include "shadow_mmu.hpp"

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
    std::uint64_t pages = 8192; // faulted in all, split among the vCPUs when disjoint
    unsigned repeat = 3;
    bool linux_baseline = true;
    std::function<void(std::size_t done, std::size_t total, const std::string& what)> progress;
};

// The --quick sweep: 1, 2, 64 and 1024 vCPUs, 4096 pages, one repeat.
FaultBenchConfig quick_fault_config();

// Throws std::invalid_argument for vCPU counts outside 1..1024, fewer pages
// than vCPUs, or repeat 0.
BenchReport run_fault_bench(const FaultBenchConfig& config);

} // namespace hv::bench
