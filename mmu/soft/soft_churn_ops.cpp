// SoftChurn's operations: memslot removal, zero-page merges and ranges
// across zap batch boundaries. See soft_churn.hpp.
#include "mmu/soft/soft_churn.hpp"
#include "mmu/base/units.hpp"

#include <algorithm>

namespace hv::mmu {

namespace {
// Range lengths when the MMU zaps without a batch limit (there is no
// boundary to straddle then; the ranges are still several pages).
constexpr std::uint64_t kUnbatchedRange = 64;

} // namespace

bool SoftChurn::do_op(SoftChurnOp op, Clock::time_point now, SoftChurnCounters& c) {
    switch (op) {
    case SoftChurnOp::Memslot: return remove_memslot(now);
    case SoftChurnOp::ZeroMerge: return zero_merge();
    case SoftChurnOp::Range: return range_op(c, now);
    }
    return false;
}

bool SoftChurn::remove_memslot(Clock::time_point now) {
    std::vector<std::size_t> present;
    for (std::size_t i = 0; i < slots_.size(); ++i)
        if (!removed_[i]) present.push_back(i);
    if (present.empty()) return false; // every slot is away until its hold ends
    const std::size_t i = present[random_below(present.size())];
    mmu_.remove_memslot(slots_[i].id);
    removed_[i] = true;
    undo_.push_back({now + cfg_.memslot_hold, true, i, 0, 0});
    return true;
}

std::size_t SoftChurn::discard(std::uint64_t first, std::uint64_t count) {
    for (std::uint64_t p = first; p < first + count; ++p)
        if (before_unmap_) before_unmap_(p);
    const std::uint64_t start = host_base_ + first * kPage;
    const std::size_t changed = host_.unmap({start, start + count * kPage});
    for (std::uint64_t p = first; p < first + count; ++p)
        if (after_unmap_) after_unmap_(p);
    return changed;
}

bool SoftChurn::zero_merge() {
    if (pages_ < 2) return false;
    const std::uint64_t a = random_below(pages_);
    const std::uint64_t b = (a + 1 + random_below(pages_ - 1)) % pages_;
    const std::uint64_t ha = host_base_ + a * kPage, hb = host_base_ + b * kPage;
    // As KSM does, the pages are write-protected before their contents are
    // made equal and compared, so no vCPU write can come in between (a
    // write meanwhile is refused, as under protect churn). They become
    // identical the way a process makes them so: dropped (the stamps' unmap
    // excuse covers the zeroed slots) and touched again.
    host_.protect({ha, ha + kPage}, false);
    host_.protect({hb, hb + kPage}, false);
    discard(a, 1);
    discard(b, 1);
    const bool present = host_.fault(ha, Access::Read).status == HostFaultStatus::Mapped &&
                         host_.fault(hb, Access::Read).status == HostFaultStatus::Mapped;
    const bool merged = present && host_.merge(ha, hb);
    // Writable again; merged pages stay read-only until a write breaks the sharing.
    host_.protect({ha, ha + kPage}, true);
    host_.protect({hb, hb + kPage}, true);
    return merged;
}

bool SoftChurn::range_op(SoftChurnCounters& c, Clock::time_point now) {
    const std::size_t configured = mmu_.config().batch;
    const std::uint64_t batch = configured ? configured : kUnbatchedRange;
    // A zap walks each memslot's part of a range on its own, so a range
    // holds more entries than one batch only inside one memslot longer than
    // a batch: pick such a slot when there is one.
    std::vector<std::size_t> long_slots;
    for (std::size_t i = 0; i < slots_.size(); ++i) {
        const Memslot& m = slots_[i];
        if (m.host_start >= host_base_ && m.host_end() <= host_base_ + pages_ * kPage && m.size / kPage > batch)
            long_slots.push_back(i);
    }
    std::uint64_t lo = 0, span = pages_; // where the range lies, in region pages
    const bool crossing = configured && !long_slots.empty();
    if (crossing) {
        const Memslot& m = slots_[long_slots[random_below(long_slots.size())]];
        lo = (m.host_start - host_base_) / kPage;
        span = m.size / kPage;
    }
    // More pages than one batch holds where there is room, up to three batches' worth.
    const std::uint64_t longest = std::min(span, 3 * batch);
    const std::uint64_t shortest = std::min(longest, batch + 1);
    const std::uint64_t count = shortest + random_below(longest - shortest + 1);
    const std::uint64_t first = lo + random_below(span - count + 1);
    c.range_pages += count;
    if (crossing) ++c.range_crossings;
    if (range_kind_++ % 2 == 0) return discard(first, count) != 0;
    const std::uint64_t start = host_base_ + first * kPage;
    const std::size_t changed = host_.protect({start, start + count * kPage}, false);
    undo_.push_back({now + cfg_.protect_hold, false, 0, first, count});
    return changed != 0;
}

} // namespace hv::mmu
