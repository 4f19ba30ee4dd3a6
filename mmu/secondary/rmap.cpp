#include "mmu/secondary/rmap.hpp"
#include "mmu/sync/sched_point.hpp"


#include <cassert>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace hv::mmu {

template <unsigned N>
BasicRmap<N>::BasicRmap(Pfn frames) : frames_(frames), heads_(frames) {}

template <unsigned N>
BasicRmap<N>::~BasicRmap() {
    for (Pfn p = 0; p < frames_; ++p) {
        const std::uint64_t head = heads_[p].load(std::memory_order_relaxed);
        if (head == 0 || is_inline(head)) continue;
        for (Desc* d = as_desc(head); d;) {
            Desc* next = d->next;
            delete d;
            d = next;
        }
    }
}

template <unsigned N>
std::uint64_t BasicRmap<N>::lock_chain(Pfn pfn) const {
    auto& h = heads_[pfn];
    for (unsigned spins = 0;; ++spins) {
        std::uint64_t cur = h.load(std::memory_order_acquire);
        if (cur == 0 || is_inline(cur)) return cur; // not a chain: nothing locked
        if (!(cur & kLocked) &&
            h.compare_exchange_weak(cur, cur | kLocked, std::memory_order_acquire, std::memory_order_relaxed))
            return cur;
        // The holder only edits a descriptor chain: brief, unless the OS
        // preempted it, and then our core is better given to it.
        if (sched::controlled())
            sched::blocked(sched::Point::LockSpin);
        else if (spins < 64)
            __builtin_ia32_pause();
        else
            std::this_thread::yield();
    }
}

template <unsigned N>
void BasicRmap<N>::add(Pfn pfn, std::uint64_t gfn, Writers writers) {
    if (pfn >= frames_) throw std::out_of_range("Rmap::add: frame out of range");
    if (gfn >> 62) throw std::out_of_range("Rmap::add: gfn at or above 2^62");
    auto& h = heads_[pfn];
    if (writers == Writers::Excluded && h.load(std::memory_order_relaxed) == 0) {
        h.store(inline_head(gfn), std::memory_order_release);
        return;
    }
    Desc* spare = nullptr; // a descriptor allocated for a transition that lost a race
    for (;;) {
        // The first link: empty -> inline, one compare-exchange, no lock.
        std::uint64_t cur = 0;
        if (h.compare_exchange_strong(cur, inline_head(gfn), std::memory_order_acq_rel, std::memory_order_acquire)) {
            delete spare;
            return;
        }
        if (is_inline(cur)) {
            // The second link: inline -> a descriptor holding both, one
            // compare-exchange (inline heads are never locked).
            Desc* d = spare ? spare : new Desc;
            spare = nullptr;
            d->gfns[0] = inline_gfn(cur);
            d->gfns[1] = gfn;
            d->count = 2;
            d->next = nullptr;
            if (h.compare_exchange_strong(cur, reinterpret_cast<std::uint64_t>(d), std::memory_order_acq_rel,
                                          std::memory_order_acquire))
                return;
            spare = d;
            continue;
        }
        const std::uint64_t head = lock_chain(pfn);
        if (head == 0 || is_inline(head)) continue; // changed meanwhile: start over
        Desc* first = as_desc(head);
        if (first->count < N) {
            first->gfns[first->count++] = gfn;
            unlock(pfn, head);
            delete spare;
            return;
        }
        // The first descriptor is full: a new one goes in front, so the
        // partly full descriptor is always the first.
        Desc* d = spare;
        if (!d) {
            try {
                d = new Desc;
            } catch (...) {
                unlock(pfn, head);
                throw;
            }
        }
        d->gfns[0] = gfn;
        d->count = 1;
        d->next = first;
        unlock(pfn, reinterpret_cast<std::uint64_t>(d));
        return;
    }
}

template <unsigned N>
bool BasicRmap<N>::remove(Pfn pfn, std::uint64_t gfn, Writers writers) {
    if (pfn >= frames_) return false;
    auto& h = heads_[pfn];
    // Empty or inline: answered, or removed without the lock: one
    // compare-exchange, or (no other writer) a plain store -- inline heads
    // are never locked, so no reader's lock bit can be lost to it.
    for (;;) {
        std::uint64_t cur = h.load(std::memory_order_acquire);
        if (cur == 0) return false;
        if (!is_inline(cur)) break;
        if (inline_gfn(cur) != gfn) return false;
        if (writers == Writers::Excluded) {
            h.store(0, std::memory_order_release);
            return true;
        }
        if (h.compare_exchange_weak(cur, 0, std::memory_order_acq_rel, std::memory_order_relaxed)) return true;
    }
    std::uint64_t head = lock_chain(pfn);
    if (head == 0 || is_inline(head)) return remove(pfn, gfn, writers); // changed meanwhile
    Desc* first = as_desc(head);
    std::uint64_t* slot = nullptr;
    for (Desc* d = first; d && !slot; d = d->next)
        for (unsigned i = 0; i < d->count; ++i)
            if (d->gfns[i] == gfn) {
                slot = &d->gfns[i];
                break;
            }
    if (!slot) {
        unlock(pfn, head);
        return false;
    }
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
        head = inline_head(first->gfns[0]);
        delete first;
    }
    unlock(pfn, head);
    return true;
}

template <unsigned N>
std::vector<std::uint64_t> BasicRmap<N>::list(Pfn pfn) const {
    std::vector<std::uint64_t> out;
    if (pfn >= frames_) return out;
    const std::uint64_t head = lock_chain(pfn);
    if (head == 0) return out;
    if (is_inline(head)) {
        out.push_back(inline_gfn(head));
        return out;
    }
    const Desc* first = as_desc(head);
    // All but the first descriptor are full: one allocation fits them all.
    std::size_t chain = 0;
    for (const Desc* d = first->next; d; d = d->next) ++chain;
    try {
        out.reserve(first->count + chain * N);
    } catch (...) {
        unlock(pfn, head);
        throw;
    }
    for (const Desc* d = first; d; d = d->next) out.insert(out.end(), d->gfns, d->gfns + d->count);
    unlock(pfn, head);
    return out;
}

template <unsigned N>
std::size_t BasicRmap<N>::count(Pfn pfn) const {
    if (pfn >= frames_) return 0;
    const std::uint64_t head = lock_chain(pfn);
    if (head == 0) return 0;
    if (is_inline(head)) return 1;
    std::size_t n = 0;
    for (const Desc* d = as_desc(head); d; d = d->next) n += d->count;
    unlock(pfn, head);
    return n;
}

template <unsigned N>
template <class F>
void BasicRmap<N>::for_each_head(F f) const {
    for (Pfn p = 0; p < frames_; ++p) {
        const std::uint64_t head = lock_chain(p);
        f(head);
        if (head != 0 && !is_inline(head)) unlock(p, head);
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
