#pragma once
// The shadow region's per-page unmap counters (abi.h: hv_shadow_info's
// unmap_started and unmap_done), words in guest RAM that the guest reads
// too. Every host unmap of region page N, by the churn or by a hypercall,
// is counted around the unmap: started[N] before, done[N] after. The
// coherence check reads started[N] to tell a write that an unmap begun
// after it may have discarded from a lost one.
//
// A view: copies share the counters, which must outlive it. Default: no
// counters; begin() and end() do nothing and started() is 0.
#include <atomic>
#include <cstdint>
#include <span>

namespace hv {

class UnmapCounters {
public:
    UnmapCounters() = default;
    // One 8-byte aligned word per region page in each.
    UnmapCounters(std::span<std::uint64_t> started, std::span<std::uint64_t> done) : started_(started), done_(done) {}

    void begin(std::uint64_t page) const { bump(started_, page); }
    void end(std::uint64_t page) const { bump(done_, page); }
    // Unmaps of `page` begun so far (0 for a page past the region).
    std::uint64_t started(std::uint64_t page) const {
        return page < started_.size() ? std::atomic_ref<std::uint64_t>(started_[page]).load(std::memory_order_acquire)
                                      : 0;
    }

private:
    static void bump(std::span<std::uint64_t> words, std::uint64_t page) {
        if (page < words.size()) std::atomic_ref<std::uint64_t>(words[page]).fetch_add(1, std::memory_order_seq_cst);
    }

    std::span<std::uint64_t> started_, done_;
};

} // namespace hv
