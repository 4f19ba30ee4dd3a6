#pragma once
// The software vCPUs' own churn (SoftChurn), beside the host churn
// (host_churn.hpp): operations that need to know the shadow MMU's memslots,
// the zap batch, or the stamps' excuse for a zeroed page, so they cannot run
// against a KVM guest's memory the way HostChurn does. From its own thread:
//   memslot    removes one memslot of the shadow MMU (a random one still
//              present) and adds it back `memslot_hold` later: meanwhile a
//              vCPU access there gets FaultResult::NoMemslot, an expected
//              outcome (the access does not happen, its write is not expected).
//   zero-merge write-protects two pages (as KSM does before it compares),
//              discards them (as unmap does: the before/after hooks excuse
//              their zeroed slots), reads both back zero-filled, merges them
//              (identical contents) and makes them writable again: both map
//              one read-only frame, and the next vCPU write to either breaks
//              the sharing (copy-on-write). `done` counts the merges that
//              succeeded; while protected, vCPU writes there are refused.
//   range      a host unmap or protect (alternately; a protected range is
//              writable again protect_hold later) of batch + 1 to 3 x batch
//              pages (ShadowConfig::batch) inside one memslot longer than a
//              batch, when there is one: with its pages present the range
//              straddles a batch boundary, so the shadow MMU's zap drops its
//              lock after a full batch and resumes mid-range
//              (ShadowCounters::resumed_batches). Without such a slot (or
//              with an unlimited batch) a range of up to 3 x batch (64)
//              pages anywhere in the region.
// Rates and the quota work as HostChurn's. run() re-adds every memslot and
// restores every protection before it returns, also when it throws.
#include "mmu/base/seeded_random.hpp"
#include "mmu/secondary/shadow_mmu.hpp"

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <vector>

namespace hv::mmu {

enum class SoftChurnOp { Memslot, ZeroMerge, Range };
inline constexpr std::size_t kSoftChurnOps = 3;
const char* to_string(SoftChurnOp op);

struct SoftChurnCounters {
    std::uint64_t attempted[kSoftChurnOps] = {};
    std::uint64_t done[kSoftChurnOps] = {}; // memslot: removed; zero-merge: merged; range: changed a page
    std::uint64_t memslot_readds = 0;      // removed memslots added back
    std::uint64_t range_pages = 0;         // pages covered by range operations
    std::uint64_t range_crossings = 0;     // ranges longer than a zap batch inside one memslot
    SoftChurnCounters& operator+=(const SoftChurnCounters& o);
};

struct SoftChurnConfig {
    double rate[kSoftChurnOps] = {}; // operations per second, by SoftChurnOp; 0 = off
    std::chrono::microseconds memslot_hold{1000};  // a removed memslot comes back after this
    std::chrono::microseconds protect_hold{500};   // a protected range is writable again after this
    bool any() const {
        for (double r : rate)
            if (r > 0) return true;
        return false;
    }
};

class SoftChurn {
public:
    // The region: host pages [host_base, +pages) behind the MMU's memslots,
    // all of which the memslot operation may remove. Hooks as in
    // ChurnConfig (called around every page a range or zero-merge discards;
    // may be empty). Throws std::invalid_argument for a rate that is not
    // finite and >= 0, an empty region or negative holds.
    SoftChurn(ShadowMmu& mmu, SoftChurnConfig config, std::uint64_t host_base, std::uint64_t pages,
              std::uint64_t seed, std::uint64_t min_ops, std::function<void(std::uint64_t)> before_unmap,
              std::function<void(std::uint64_t)> after_unmap);
    SoftChurn(const SoftChurn&) = delete;
    SoftChurn& operator=(const SoftChurn&) = delete;

    // Runs operations until `stop` is set, adding to `out`. One run() at a time.
    void run(const std::atomic<bool>& stop, SoftChurnCounters& out);
    // Every enabled operation attempted at least min_ops times (true when
    // min_ops == 0 or nothing is enabled). Any thread.
    bool quota_met() const { return quota_met_.load(std::memory_order_acquire); }
    bool enabled() const { return cfg_.any(); }

private:
    // Something to undo later: a memslot to add back, a range to make writable.
    struct Undo {
        std::chrono::steady_clock::time_point when;
        bool memslot;          // else a protected range
        std::size_t slot;      // index into slots_
        std::uint64_t first, count; // the protected range's pages
    };
    using Clock = std::chrono::steady_clock;
    bool do_op(SoftChurnOp op, Clock::time_point now, SoftChurnCounters& c);
    bool remove_memslot(Clock::time_point now);
    bool zero_merge();
    bool range_op(SoftChurnCounters& c, Clock::time_point now);
    std::size_t discard(std::uint64_t first, std::uint64_t count); // unmap, with the hooks; pages changed
    void undo(const Undo& u, SoftChurnCounters& c);
    std::uint64_t random_below(std::uint64_t n) { return n ? rng_.next() % n : 0; }
    void update_quota(const SoftChurnCounters& c);

    ShadowMmu& mmu_;
    HostAddressSpace& host_;
    const SoftChurnConfig cfg_;
    const std::uint64_t host_base_, pages_, min_ops_;
    std::function<void(std::uint64_t)> before_unmap_, after_unmap_;
    std::vector<Memslot> slots_;   // as the MMU had them at construction
    std::vector<bool> removed_;    // by index into slots_
    std::vector<Undo> undo_;       // in the order they fall due
    SplitMix rng_;
    std::uint64_t range_kind_ = 0; // alternates unmap and protect
    std::uint64_t attempted_before_[kSoftChurnOps] = {}; // by earlier runs, for the quota
    std::atomic<bool> quota_met_{true};
};

} // namespace hv::mmu
