#include "mmu/check/reference_model.hpp"
#include "mmu/base/units.hpp"

#include <algorithm>
#include <tuple>

namespace hv::mmu {
using namespace detail;
namespace {
constexpr std::uint64_t kLimit = MemslotTable::kAddressLimit;

bool page_range_ok(std::uint64_t start, std::uint64_t end) {
    return start <= end && end <= kLimit && (start | end) % kPage == 0;
}
std::string rw_text(bool writable) { return writable ? ", rw)" : ", ro)"; }

// The value of the interval in `by_start` holding `a`, or null; end(value) is its end.
template <class Map, class End>
const typename Map::mapped_type* find_interval(const Map& by_start, std::uint64_t a, End&& end) {
    auto it = by_start.upper_bound(a);
    if (it == by_start.begin()) return nullptr;
    --it;
    return a < end(it->second) ? &it->second : nullptr;
}

} // namespace

const char* name(const Op& op) {
    static constexpr const char* kNames[] = {"add_memslot", "alias_memslot", "remove_memslot", "fault",
                                             "guest_write", "map_anonymous", "unmap", "protect", "migrate",
                                             "merge", "swap_out", "age", "zap_guest_range"};
    static_assert(std::size(kNames) == std::variant_size_v<Op>);
    return kNames[op.index()];
}

std::string describe(const Op& any) {
    struct Args {
        std::string operator()(const op::AddMemslot& o) const {
            return "id " + std::to_string(o.slot.id) + ", guest " + hex(o.slot.guest_start) + ", size " +
                   hex(o.slot.size) + ", host " + hex(o.slot.host_start) + rw_text(o.slot.writable);
        }
        std::string operator()(const op::AliasMemslot& o) const {
            return "of " + std::to_string(o.existing) + ", id " + std::to_string(o.id) + ", guest " + hex(o.guest_start) + ")";
        }
        std::string operator()(const op::RemoveMemslot& o) const { return std::to_string(o.id) + ")"; }
        std::string operator()(const op::Fault& o) const {
            return "vcpu " + std::to_string(o.vcpu) + ", " + hex(o.guest_address) +
                   (o.access == Access::Write ? ", write)" : ", read)");
        }
        std::string operator()(const op::GuestWrite& o) const {
            return "vcpu " + std::to_string(o.vcpu) + ", " + hex(o.guest_address) + ", token " + std::to_string(o.token) + ")";
        }
        std::string operator()(const op::MapAnonymous& o) const { return range_text(o.range.start, o.range.end) + rw_text(o.writable); }
        std::string operator()(const op::Unmap& o) const { return range_text(o.range.start, o.range.end) + ")"; }
        std::string operator()(const op::Protect& o) const { return range_text(o.range.start, o.range.end) + rw_text(o.writable); }
        std::string operator()(const op::Migrate& o) const { return hex(o.address) + ")"; }
        std::string operator()(const op::Merge& o) const { return hex(o.keep) + ", " + hex(o.other) + ")"; }
        std::string operator()(const op::SwapOut& o) const { return hex(o.address) + ")"; }
        std::string operator()(const op::Age& o) const { return range_text(o.range.start, o.range.end) + ")"; }
        std::string operator()(const op::ZapGuestRange& o) const { return range_text(o.start, o.end) + ")"; }
    };
    return std::string(name(any)) + "(" + std::visit(Args{}, any);
}

bool ReferenceModel::valid(const Op& any) const {
    if (auto* o = std::get_if<op::Fault>(&any)) return o->vcpu < config_.vcpus && o->guest_address < kLimit;
    if (auto* o = std::get_if<op::GuestWrite>(&any)) return o->vcpu < config_.vcpus && o->guest_address < kLimit;
    if (auto* o = std::get_if<op::Unmap>(&any)) return page_range_ok(o->range.start, o->range.end);
    if (auto* o = std::get_if<op::Protect>(&any)) return page_range_ok(o->range.start, o->range.end);
    if (auto* o = std::get_if<op::Age>(&any)) return page_range_ok(o->range.start, o->range.end);
    if (auto* o = std::get_if<op::ZapGuestRange>(&any)) return page_range_ok(o->start, o->end);
    if (auto* o = std::get_if<op::Migrate>(&any)) return o->address < kLimit;
    if (auto* o = std::get_if<op::SwapOut>(&any)) return o->address < kLimit;
    if (auto* o = std::get_if<op::Merge>(&any)) return o->keep < kLimit && o->other < kLimit;
    return true;
}

std::string ReferenceModel::apply(const Op& any) {
    return std::visit([this](const auto& o) { return apply_op(o); }, any);
}

const Memslot* ReferenceModel::find_slot(std::uint64_t ga) const {
    return find_interval(slots_, ga, [](const Memslot& s) { return s.guest_end(); });
}

std::optional<std::uint64_t> ReferenceModel::guest_to_host(std::uint64_t ga) const {
    const Memslot* s = find_slot(ga);
    if (!s) return std::nullopt;
    return s->host_start + (ga - s->guest_start);
}

const ReferenceModel::Region* ReferenceModel::region_for(std::uint64_t ha) const {
    return find_interval(regions_, ha, [](const Region& r) { return r.end; });
}

template <class Fn>
void ReferenceModel::for_each_guest_range(HostRange range, Fn&& fn) const {
    for (const auto& [start, s] : slots_) {
        const std::uint64_t lo = std::max(range.start, s.host_start), hi = std::min(range.end, s.host_end());
        if (lo < hi) fn(s.guest_start + (lo - s.host_start), s.guest_start + (hi - s.host_start));
    }
}

std::size_t ReferenceModel::zap_guest(std::uint64_t start, std::uint64_t end) {
    auto first = entries_.lower_bound(start), last = entries_.lower_bound(end);
    const auto n = static_cast<std::size_t>(std::distance(first, last));
    entries_.erase(first, last);
    return n;
}

void ReferenceModel::invalidate(HostRange range) {
    for_each_guest_range(range, [&](std::uint64_t lo, std::uint64_t hi) { zap_guest(lo, hi); });
}

bool ReferenceModel::add_slot(const Memslot& s) {
    if (s.size == 0 || (s.guest_start | s.size | s.host_start) % kPage) return false;
    if (s.guest_start >= kLimit || s.size > kLimit - s.guest_start || s.host_start >= kLimit ||
        s.size > kLimit - s.host_start)
        return false;
    for (const auto& [start, other] : slots_)
        if (other.id == s.id || (s.guest_start < other.guest_end() && other.guest_start < s.guest_end())) return false;
    slots_.emplace(s.guest_start, s);
    return true; // no zap: no entry can exist where no slot was
}

std::string ReferenceModel::apply_op(const op::AddMemslot& o) { return accept_outcome(add_slot(o.slot)); }

std::map<std::uint64_t, Memslot>::iterator ReferenceModel::slot_by_id(std::uint32_t id) {
    return std::find_if(slots_.begin(), slots_.end(), [&](const auto& kv) { return kv.second.id == id; });
}

std::string ReferenceModel::apply_op(const op::AliasMemslot& o) {
    const auto it = slot_by_id(o.existing);
    if (it == slots_.end()) return accept_outcome(false);
    Memslot copy = it->second;
    copy.id = o.id;
    copy.guest_start = o.guest_start;
    return accept_outcome(add_slot(copy));
}

std::string ReferenceModel::apply_op(const op::RemoveMemslot& o) {
    const auto it = slot_by_id(o.id);
    if (it == slots_.end()) return accept_outcome(false);
    zap_guest(it->second.guest_start, it->second.guest_end());
    slots_.erase(it);
    return accept_outcome(true);
}

// The host's get_user_pages. A write into a read-only region fails even on a
// merged page: protect() wins over copy-on-write.
ReferenceModel::HostFault ReferenceModel::host_fault(std::uint64_t ha, Access access) {
    const Region* region = region_for(ha);
    if (!region) return HostFault::NoMapping;
    if (access == Access::Write && !region->writable) return HostFault::ReadOnly;
    auto it = pages_.find(ha);
    if (it != pages_.end() && !it->second.swapped) {
        HostPage& page = it->second;
        if (access == Access::Write && !page.writable) {
            if (!page.merged) return HostFault::ReadOnly;
            invalidate({ha, ha + kPage}); // the COW break is an invalidation of this page
            page.frame = next_frame_++;
            page.merged = false;
            page.writable = page.young = true;
            return HostFault::MappedAfterCowBreak;
        }
        page.young = true;
        return HostFault::Mapped;
    }
    const std::uint64_t token = it != pages_.end() ? it->second.token : 0; // swap-in or zero fill
    pages_[ha] = HostPage{false, region->writable, false, true, next_frame_++, token};
    return HostFault::Mapped;
}

FaultResult ReferenceModel::install(std::uint64_t ga, const Memslot& slot, const HostPage& page, Access access) {
    const bool writable = page.writable && slot.writable;
    if (access == Access::Write && !writable) return FaultResult::Refused;
    auto it = entries_.find(ga);
    // An entry as good as the one we would install stays, accessed bit and all.
    if (it != entries_.end() && (it->second.writable || !writable)) return FaultResult::Installed;
    entries_[ga] = ShadowEntry{writable, true};
    return FaultResult::Installed;
}

FaultResult ReferenceModel::fault(std::uint64_t guest_address, Access access) {
    const std::uint64_t ga = guest_address & ~(kPage - 1);
    const Memslot* slot = find_slot(ga);
    if (!slot) return FaultResult::NoMemslot;
    if (access == Access::Write && !slot->writable) return FaultResult::Refused;
    const std::uint64_t ha = slot->host_start + (ga - slot->guest_start);
    if (config_.coherence == CoherencePolicy::PtLock) {
        // A usable present PTE is taken under its PT lock without a host
        // fault, which marks it accessed just the same.
        auto it = pages_.find(ha);
        if (it != pages_.end() && !it->second.swapped && (access == Access::Read || it->second.writable)) {
            it->second.young = true;
            return install(ga, *slot, it->second, access);
        }
    }
    const HostFault r = host_fault(ha, access);
    if (r == HostFault::NoMapping || r == HostFault::ReadOnly) return FaultResult::Refused;
    // The sequence count moved under the fault's own COW break.
    if (r == HostFault::MappedAfterCowBreak && config_.coherence == CoherencePolicy::Seq) return FaultResult::Retry;
    return install(ga, *slot, pages_.at(ha), access);
}

std::string ReferenceModel::apply_op(const op::Fault& o) { return to_string(fault(o.guest_address, o.access)); }

std::string ReferenceModel::apply_op(const op::GuestWrite& o) {
    const std::uint64_t ga = o.guest_address & ~(kPage - 1);
    auto writable_entry = [&] {
        auto it = entries_.find(ga);
        return it != entries_.end() && it->second.writable;
    };
    return guest_write(writable_entry, [&] { return fault(ga, Access::Write); },
                       [&] { pages_.at(*guest_to_host(ga)).token = o.token; });
}

std::string ReferenceModel::apply_op(const op::MapAnonymous& o) {
    const HostRange r = o.range;
    if (r.start >= r.end || (r.start | r.end) % kPage || r.end > kLimit) return accept_outcome(false);
    auto next = regions_.lower_bound(r.start);
    if (next != regions_.end() && next->first < r.end) return accept_outcome(false);
    if (next != regions_.begin() && std::prev(next)->second.end > r.start) return accept_outcome(false);
    regions_.emplace(r.start, Region{r.end, o.writable});
    return accept_outcome(true);
}

// Unmap drops pages and swap slots but keeps the region (MADV_DONTNEED, not
// munmap): a later fault zero-fills.
std::string ReferenceModel::apply_op(const op::Unmap& o) {
    auto first = pages_.lower_bound(o.range.start), last = pages_.lower_bound(o.range.end);
    if (!page_at_a_time_) invalidate(o.range);
    for (auto it = first; page_at_a_time_ && it != last; ++it)
        if (!it->second.swapped) invalidate({it->first, it->first + kPage});
    const auto n = static_cast<std::size_t>(std::distance(first, last));
    pages_.erase(first, last);
    return count_outcome(n);
}

// Protect sets the permission of the regions' parts inside the range (absent
// and swapped pages fault in with it later) and of present PTEs now; merged
// pages stay read-only. Every page of the range is invalidated, changed or not
// (page at a time: the changed ones).
std::string ReferenceModel::apply_op(const op::Protect& o) {
    for (std::uint64_t cut : {o.range.start, o.range.end}) {
        auto it = regions_.upper_bound(cut);
        if (it == regions_.begin()) continue;
        --it;
        if (it->first < cut && cut < it->second.end) {
            regions_.emplace(cut, Region{it->second.end, it->second.writable});
            it->second.end = cut;
        }
    }
    for (auto it = regions_.lower_bound(o.range.start); it != regions_.end() && it->first < o.range.end; ++it)
        it->second.writable = o.writable;
    if (!page_at_a_time_) invalidate(o.range);
    std::size_t changed = 0;
    for (auto it = pages_.lower_bound(o.range.start); it != pages_.end() && it->first < o.range.end; ++it) {
        HostPage& p = it->second;
        const bool w = o.writable && !p.merged;
        if (p.swapped || p.writable == w) continue;
        p.writable = w;
        ++changed;
        if (page_at_a_time_) invalidate({it->first, it->first + kPage});
    }
    return count_outcome(changed);
}

// Migrate and swap_out leave absent, swapped and merged pages alone (shared
// frames are not moved), but in range mode invalidate the page all the same.
ReferenceModel::HostPage* ReferenceModel::movable_page(std::uint64_t address) {
    const std::uint64_t ha = address & ~(kPage - 1);
    auto it = pages_.find(ha);
    const bool movable = it != pages_.end() && !it->second.swapped && !it->second.merged;
    if (movable || !page_at_a_time_) invalidate({ha, ha + kPage});
    return movable ? &it->second : nullptr;
}

std::string ReferenceModel::apply_op(const op::Migrate& o) {
    HostPage* page = movable_page(o.address);
    if (page) page->frame = next_frame_++;
    return bool_outcome(page);
}

std::string ReferenceModel::apply_op(const op::SwapOut& o) {
    HostPage* page = movable_page(o.address);
    if (page) *page = HostPage{true, false, false, false, 0, page->token};
    return bool_outcome(page);
}

// Both pages are invalidated whatever the result (in either mode), except
// when they are one page.
std::string ReferenceModel::apply_op(const op::Merge& o) {
    const std::uint64_t keep = o.keep & ~(kPage - 1), other = o.other & ~(kPage - 1);
    if (keep == other) return bool_outcome(false);
    invalidate({keep, keep + kPage});
    invalidate({other, other + kPage});
    auto a = pages_.find(keep), b = pages_.find(other);
    if (a == pages_.end() || b == pages_.end() || a->second.swapped || b->second.swapped) return bool_outcome(false);
    if (a->second.frame == b->second.frame || a->second.token != b->second.token) return bool_outcome(false);
    a->second.merged = b->second.merged = true;
    a->second.writable = b->second.writable = false;
    b->second.frame = a->second.frame;
    return bool_outcome(true);
}

// Young if any shadow entry over the range (through any memslot) or any host
// PTE in it was accessed since the last age; clears both.
std::string ReferenceModel::apply_op(const op::Age& o) {
    bool young = false;
    for_each_guest_range(o.range, [&](std::uint64_t lo, std::uint64_t hi) {
        for (auto it = entries_.lower_bound(lo); it != entries_.end() && it->first < hi; ++it)
            young |= std::exchange(it->second.young, false);
    });
    for (auto it = pages_.lower_bound(o.range.start); it != pages_.end() && it->first < o.range.end; ++it)
        if (!it->second.swapped) young |= std::exchange(it->second.young, false);
    return bool_outcome(young);
}

std::string ReferenceModel::apply_op(const op::ZapGuestRange& o) { return count_outcome(zap_guest(o.start, o.end)); }

} // namespace hv::mmu
