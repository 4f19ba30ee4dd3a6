#include "rmap.hpp"

#include <mutex>
#include <stdexcept>

namespace hv::mmu {

Rmap::Rmap(Pfn frames)
    : frames_(frames), heads_(std::make_unique<std::uint64_t[]>(frames)), locks_(std::make_unique<PtLock[]>(frames)) {}

Rmap::~Rmap() {
    for (Pfn p = 0; p < frames_; ++p) {
        const std::uint64_t head = heads_[p];
        if (head == 0 || inline_entry(head)) continue;
        for (Desc* d = reinterpret_cast<Desc*>(head); d;) {
            Desc* next = d->next;
            delete d;
            d = next;
        }
    }
}

void Rmap::add(Pfn pfn, std::uint64_t gfn) {
    if (pfn >= frames_) throw std::out_of_range("Rmap::add: frame out of range");
    std::lock_guard guard(locks_[pfn]);
    links_.fetch_add(1, std::memory_order_relaxed);
    std::uint64_t& head = heads_[pfn];
    if (head == 0) {
        head = (gfn << 1) | 1;
        return;
    }
    if (inline_entry(head)) {
        auto* d = new Desc;
        descriptors_.fetch_add(1, std::memory_order_relaxed);
        d->gfns[0] = head >> 1;
        d->gfns[1] = gfn;
        d->count = 2;
        head = reinterpret_cast<std::uint64_t>(d);
        return;
    }
    auto* first = reinterpret_cast<Desc*>(head);
    if (first->count < kRmapDescEntries) {
        first->gfns[first->count++] = gfn;
        return;
    }
    auto* d = new Desc;
    descriptors_.fetch_add(1, std::memory_order_relaxed);
    d->gfns[0] = gfn;
    d->count = 1;
    d->next = first;
    head = reinterpret_cast<std::uint64_t>(d);
}

bool Rmap::remove(Pfn pfn, std::uint64_t gfn) {
    if (pfn >= frames_) return false;
    std::lock_guard guard(locks_[pfn]);
    std::uint64_t& head = heads_[pfn];
    if (head == 0) return false;
    if (inline_entry(head)) {
        if ((head >> 1) != gfn) return false;
        head = 0;
        links_.fetch_sub(1, std::memory_order_relaxed);
        return true;
    }
    auto* first = reinterpret_cast<Desc*>(head);
    for (Desc* d = first; d; d = d->next) {
        for (unsigned i = 0; i < d->count; ++i) {
            if (d->gfns[i] != gfn) continue;
            // Fill the hole with the last entry of the first descriptor, so
            // only the first descriptor is ever partly full.
            d->gfns[i] = first->gfns[--first->count];
            if (first->count == 0) {
                head = reinterpret_cast<std::uint64_t>(first->next);
                delete first;
                descriptors_.fetch_sub(1, std::memory_order_relaxed);
                if (head == 0) break;
            }
            // Back to the inline form when one entry is left.
            auto* h = reinterpret_cast<Desc*>(head);
            if (h && !h->next && h->count == 1) {
                head = (h->gfns[0] << 1) | 1;
                delete h;
                descriptors_.fetch_sub(1, std::memory_order_relaxed);
            }
            links_.fetch_sub(1, std::memory_order_relaxed);
            return true;
        }
    }
    return false;
}

std::vector<std::uint64_t> Rmap::list(Pfn pfn) const {
    std::vector<std::uint64_t> out;
    if (pfn >= frames_) return out;
    std::lock_guard guard(locks_[pfn]);
    const std::uint64_t head = heads_[pfn];
    if (head == 0) return out;
    if (inline_entry(head)) return {head >> 1};
    for (const Desc* d = reinterpret_cast<const Desc*>(head); d; d = d->next) out.insert(out.end(), d->gfns, d->gfns + d->count);
    return out;
}

} // namespace hv::mmu
