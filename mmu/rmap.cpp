#include "rmap.hpp"

#include <cassert>
#include <mutex>
#include <stdexcept>

namespace hv::mmu {

template <unsigned N>
BasicRmap<N>::BasicRmap(Pfn frames)
    : frames_(frames), heads_(std::make_unique<std::uint64_t[]>(frames)), locks_(std::make_unique<PtLock[]>(frames)) {}

template <unsigned N>
BasicRmap<N>::~BasicRmap() {
    for (Pfn p = 0; p < frames_; ++p) {
        const std::uint64_t head = heads_[p];
        if (head == 0 || is_inline(head)) continue;
        for (Desc* d = as_desc(head); d;) {
            Desc* next = d->next;
            delete d;
            d = next;
        }
    }
}

template <unsigned N>
void BasicRmap<N>::add(Pfn pfn, std::uint64_t gfn) {
    if (pfn >= frames_) throw std::out_of_range("Rmap::add: frame out of range");
    std::lock_guard guard(locks_[pfn]);
    std::uint64_t& head = heads_[pfn];
    if (head == 0) {
        head = (gfn << 1) | 1;
        return;
    }
    if (is_inline(head)) {
        auto* d = new Desc;
        d->gfns[0] = head >> 1;
        d->gfns[1] = gfn;
        d->count = 2;
        head = reinterpret_cast<std::uint64_t>(d);
        return;
    }
    Desc* first = as_desc(head);
    if (first->count < N) {
        first->gfns[first->count++] = gfn;
        return;
    }
    // The first descriptor is full: a new one goes in front, so the partly
    // full descriptor is always the first.
    auto* d = new Desc;
    d->gfns[0] = gfn;
    d->count = 1;
    d->next = first;
    head = reinterpret_cast<std::uint64_t>(d);
}

template <unsigned N>
bool BasicRmap<N>::remove(Pfn pfn, std::uint64_t gfn) {
    if (pfn >= frames_) return false;
    std::lock_guard guard(locks_[pfn]);
    std::uint64_t& head = heads_[pfn];
    if (head == 0) return false;
    if (is_inline(head)) {
        if ((head >> 1) != gfn) return false;
        head = 0;
        return true;
    }
    Desc* first = as_desc(head);
    std::uint64_t* slot = nullptr;
    for (Desc* d = first; d && !slot; d = d->next)
        for (unsigned i = 0; i < d->count; ++i)
            if (d->gfns[i] == gfn) {
                slot = &d->gfns[i];
                break;
            }
    if (!slot) return false;
    // Fill the hole with the last entry of the first descriptor, so only the
    // first descriptor is ever partly full.
    *slot = first->gfns[--first->count];
    if (first->count == 0) {
        // A lone descriptor holds at least two links, so a full one follows.
        assert(first->next);
        head = reinterpret_cast<std::uint64_t>(first->next);
        delete first;
        first = as_desc(head);
    }
    // Back to the inline form when one link is left.
    if (!first->next && first->count == 1) {
        head = (first->gfns[0] << 1) | 1;
        delete first;
    }
    return true;
}

template <unsigned N>
std::vector<std::uint64_t> BasicRmap<N>::list(Pfn pfn) const {
    std::vector<std::uint64_t> out;
    if (pfn >= frames_) return out;
    std::lock_guard guard(locks_[pfn]);
    const std::uint64_t head = heads_[pfn];
    if (head == 0) return out;
    if (is_inline(head)) {
        out.push_back(head >> 1);
        return out;
    }
    const Desc* first = as_desc(head);
    // All but the first descriptor are full: one allocation fits them all.
    std::size_t chain = 0;
    for (const Desc* d = first->next; d; d = d->next) ++chain;
    out.reserve(first->count + chain * N);
    for (const Desc* d = first; d; d = d->next) out.insert(out.end(), d->gfns, d->gfns + d->count);
    return out;
}

template <unsigned N>
std::size_t BasicRmap<N>::count(Pfn pfn) const {
    if (pfn >= frames_) return 0;
    std::lock_guard guard(locks_[pfn]);
    const std::uint64_t head = heads_[pfn];
    if (head == 0) return 0;
    if (is_inline(head)) return 1;
    std::size_t n = 0;
    for (const Desc* d = as_desc(head); d; d = d->next) n += d->count;
    return n;
}

template <unsigned N>
template <class F>
void BasicRmap<N>::for_each_head(F f) const {
    for (Pfn p = 0; p < frames_; ++p) {
        std::lock_guard guard(locks_[p]);
        f(heads_[p]);
    }
}

template <unsigned N>
std::size_t BasicRmap<N>::descriptors() const {
    std::size_t n = 0;
    for_each_head([&](std::uint64_t head) {
        if (head == 0 || is_inline(head)) return;
        for (const Desc* d = as_desc(head); d; d = d->next) ++n;
    });
    return n;
}

template <unsigned N>
std::uint64_t BasicRmap<N>::links() const {
    std::uint64_t n = 0;
    for_each_head([&](std::uint64_t head) {
        if (head == 0) return;
        if (is_inline(head)) {
            ++n;
            return;
        }
        for (const Desc* d = as_desc(head); d; d = d->next) n += d->count;
    });
    return n;
}

template class BasicRmap<6>;
template class BasicRmap<14>;
template class BasicRmap<30>;
template class BasicRmap<62>;
static_assert(BasicRmap<6>::descriptor_bytes() == 64);
static_assert(BasicRmap<14>::descriptor_bytes() == 128);
static_assert(BasicRmap<30>::descriptor_bytes() == 256);
static_assert(BasicRmap<62>::descriptor_bytes() == 512);

} // namespace hv::mmu
