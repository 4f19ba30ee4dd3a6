#pragma once
// `vmm bench mixed`: faults and zaps at the same time. What does holding the
// MMU lock for a whole range cost concurrent faults, against releasing it
// every `batch` entries? One thread populates a range through shadow faults
// and has the host unmap it (one invalidate_range_start/end; the shadow MMU
// zaps `batch` entries per lock hold), over and over, while fault threads
// fault fresh pages of their own regions and time every fault call. Only
// the faults that overlap a zap count; next to them, per lock and coherence
// policy, the same fault threads with nothing zapping (the idle row),
// measured in the same run. Counters beside the times: retries and locks
// per counted fault, entries per zap lock hold, locks per zapped page, and
// how often our threads were preempted (then the times say less).
#include "vmm/bench/bench_report.hpp"

#include "mmu/secondary/shadow_mmu.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace hv::bench {

struct MixedBenchConfig {
    std::uint64_t size = std::uint64_t{1} << 30;       // the zapped range: 4 KiB pages, a multiple of 2 MiB
    std::vector<std::size_t> batches{1, 64, 512, 0};   // entries per lock hold; 0: unlimited
    std::vector<mmu::LockPolicy> locks{mmu::LockPolicy::Global, mmu::LockPolicy::Rw, mmu::LockPolicy::Split};
    std::vector<mmu::CoherencePolicy> coherences{mmu::CoherencePolicy::Seq};
    std::uint32_t fault_threads = 1;
    unsigned repeat = 3;
    // When one measurement stops: once `min_zaps` zaps ran and either
    // `samples` faults overlapped a zap or `zap_budget` pages were zapped
    // (a policy that blocks faults for a whole zap lets only a few overlap
    // one, however many zaps run). Idle: after `samples` faults.
    std::uint64_t samples = 20000;
    unsigned min_zaps = 3;
    std::uint64_t zap_budget = std::uint64_t{1} << 20; // pages: 4 GiB of zapping
    std::function<void(std::size_t done, std::size_t total, const std::string& what)> progress;
};

// The --quick sweep: 64 MiB, batches 1, 512 and all, locks rw and global,
// one repeat, 5000 samples.
MixedBenchConfig quick_mixed_config();

// Throws std::invalid_argument for a size that is not a positive multiple
// of 2 MiB up to 4 GiB, fault threads outside 1..64, no batch, lock or
// coherence policy, or a zero repeat, samples or min_zaps.
BenchReport run_mixed_bench(const MixedBenchConfig& config);

} // namespace hv::bench
