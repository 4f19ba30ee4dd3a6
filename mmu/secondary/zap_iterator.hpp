#pragma once
// ShadowMmu::ZapIterator: walks one guest range's present leaf entries for
// a zap, a batch at a time. Internal to the shadow MMU's sources.
//
// A batch is one hold of the policy lock: at most `batch` present entries
// (0 = no limit) and, when the lock covers one leaf table (split), never
// past that table's end. Between batches the iterator drops the lock: that
// is the yield point where waiting faults get in (the lock hands itself
// over to them, hand_over_mutex.hpp). As with the TDP MMU's iterator and
// its conditional reschedule, where a zap may yield is the walk's own
// business, not its caller's.
//
// Use: while (it.next_batch()) { it.for_each_entry(clear); it.end_batch(); ...shootdown... }
// Leaf tables are never freed while the MMU lives, so the list of them
// taken at the start stays valid.
#include "mmu/base/units.hpp"
#include "mmu/secondary/policy_lock.hpp"
#include "mmu/secondary/shadow_mmu.hpp"

#include <algorithm>
#include <optional>
#include <span>
#include <vector>

namespace hv::mmu {

class ShadowMmu::ZapIterator {
public:
    struct LeafTable {
        Pfn pfn;
        std::uint64_t start; // the guest address its first entry maps
    };

    ZapIterator(ShadowMmu& mmu, GuestRange range, ShadowCounters& counters)
        : mmu_(mmu), range_(range), counters_(counters), cursor_(range.start) {
        mmu.table_.for_each_leaf_table(range.start, range.end,
                                       [&](Pfn pfn, std::uint64_t start) { tables_.push_back({pfn, start}); });
    }

    // Takes the policy lock for the next batch: false when the range is done.
    bool next_batch() {
        lock_.reset();
        if (table_ >= tables_.size()) return false;
        const LeafTable& t = tables_[table_];
        lock_.emplace(mmu_, t.pfn, counters_, PolicyLock::Mode::Zap, mmu_.config_.vcpus);
        from_ = std::max(cursor_, t.start);
        stop_ = lock_->holds_one_table() ? table_end(table_) : range_.end;
        return true;
    }
    // Calls fn(guest_address, slot) for each present entry of the batch, in
    // address order, under the lock, up to the batch limit; then moves the
    // cursor past the batch. Once per batch.
    template <class Fn>
    void for_each_entry(Fn&& fn) {
        const std::uint64_t next = visit(fn);
        resumed_ = stopped_at_limit_;
        stopped_at_limit_ = next < stop_; // the walk stops early only at the batch limit
        cursor_ = next;
        while (table_ < tables_.size() && cursor_ >= table_end(table_)) ++table_;
    }
    // The same entries without moving on (a defect flushes before clearing).
    template <class Fn>
    std::uint64_t visit(Fn&& fn) const {
        return mmu_.table_.for_each_leaf(from_, stop_, mmu_.config_.batch, fn);
    }
    // The yield point: the batch's lock dropped, before its shootdown.
    void end_batch() { lock_.reset(); }

    // This batch went on with a range the previous one left at the batch limit.
    bool resumed() const { return resumed_; }
    // The batch's lock: only between next_batch() and end_batch().
    const PolicyLock& lock() const { return lock_.value(); }
    // The leaf tables from the batch's first to the range's last.
    std::span<const LeafTable> tables_ahead() const { return std::span(tables_).subspan(table_); }

private:
    std::uint64_t table_end(std::size_t i) const { return std::min(range_.end, tables_[i].start + 512 * kPage); }

    ShadowMmu& mmu_;
    GuestRange range_;
    ShadowCounters& counters_;
    std::vector<LeafTable> tables_;
    std::size_t table_ = 0;       // the leaf table the cursor is in
    std::uint64_t cursor_;        // where the next batch starts
    std::uint64_t from_ = 0, stop_ = 0; // the current batch's reach
    bool stopped_at_limit_ = false, resumed_ = false;
    std::optional<PolicyLock> lock_;
};

} // namespace hv::mmu
