#pragma once
// One measurement of `vmm bench mixed` (bench_mixed.hpp), on a fresh MMU
// stack: fault threads time faults of fresh pages of their own regions,
// alone (idle) or while the calling thread populates a range and has the
// host unmap it, over and over. bench_mixed.cpp sweeps and reports.
#include "vmm/bench/bench_mixed.hpp"

#include <cstddef>
#include <cstdint>
#include <optional>
#include <vector>

namespace hv::bench {

struct MixedMeasurement {
    std::vector<std::uint64_t> ns;         // every counted fault's latency, all fault threads
    std::uint64_t retries = 0, locks = 0;  // over those faults
    std::uint64_t zaps = 0, zapped = 0, holds = 0, zap_locks = 0; // zapped: entries
    std::uint64_t window_ns = 0;           // all windows together
    // Preemption, which says nothing about the lock: zaps during which the
    // zapper was preempted (the fault threads then ran while the zap did
    // not, and look faster: on a busy machine the wakeup of a fault thread
    // that waited for the lock may itself preempt the zapper), and counted
    // faults that ran in a stretch during which their thread was preempted
    // (a preempted fault looks slower). Neither is left out: on a busy
    // machine, leaving out the zaps during which the zapper lost its core
    // keeps mostly those during which the fault thread lost its own (so
    // every fault kept looks slower), and leaving out both keeps none.
    std::uint64_t zaps_preempted = 0, faults_preempted = 0;
};

// Idle when `batch` is empty: the fault threads alone until they have
// `config.samples` faults. Throws std::runtime_error when a fault fails or
// an unmap finds other pages present than were faulted, std::logic_error
// when the notifier chain does not call subscribers in subscription order.
MixedMeasurement measure_mixed(const MixedBenchConfig& config, mmu::LockPolicy lock, mmu::CoherencePolicy coh,
                               std::optional<std::size_t> batch);

} // namespace hv::bench
