#include "mmu/secondary/external_tlb.hpp"

#include "mmu/base/units.hpp"
#include "mmu/base/vcpu_mask.hpp"

#include <stdexcept>
#include <string>

namespace hv::mmu {
namespace {
constexpr std::uint64_t kAddressLimit = 1ull << 47;

void bump(std::atomic<std::uint64_t>& c, std::uint64_t n = 1) { c.fetch_add(n, std::memory_order_relaxed); }
std::uint64_t get(const std::atomic<std::uint64_t>& c) { return c.load(std::memory_order_relaxed); }

} // namespace

const char* to_string(TlbStatus s) {
    switch (s) {
    case TlbStatus::Hit: return "hit";
    case TlbStatus::Refilled: return "refilled";
    case TlbStatus::Retry: return "retry";
    case TlbStatus::NoMapping: return "no-mapping";
    case TlbStatus::Refused: return "refused";
    case TlbStatus::OutOfFrames: return "out-of-frames";
    }
    return "?";
}

ExternalTlbCounters& ExternalTlbCounters::operator+=(const ExternalTlbCounters& o) {
    translations += o.translations; hits += o.hits; misses += o.misses; refills += o.refills; retries += o.retries;
    no_mapping += o.no_mapping; refused += o.refused; out_of_frames += o.out_of_frames; evictions += o.evictions;
    cancelled += o.cancelled; revalidation_failures += o.revalidation_failures;
    range_flushes += o.range_flushes; page_flushes += o.page_flushes; entries_dropped += o.entries_dropped;
    flush_locks += o.flush_locks; shared_atomics += o.shared_atomics; try_again += o.try_again;
    return *this;
}

ExternalTlb::ExternalTlb(HostAddressSpace& host, std::uint32_t vcpus, std::size_t entries_per_vcpu)
    : host_(host), vcpus_(vcpus) {
    if (vcpus == 0 || vcpus > kMaxVcpus)
        throw std::invalid_argument("ExternalTlb: vcpus must be 1.." + std::to_string(kMaxVcpus) + ", got " +
                                    std::to_string(vcpus));
    if (entries_per_vcpu == 0) throw std::invalid_argument("ExternalTlb: entries_per_vcpu must be at least 1");
    ways_ = entries_per_vcpu % 4 == 0 ? 4 : 1;
    sets_ = entries_per_vcpu / ways_;
    contexts_ = std::make_unique<Context[]>(vcpus);
    for (std::uint32_t v = 0; v < vcpus; ++v) contexts_[v].entries = std::make_unique<Entry[]>(sets_ * ways_);
    host_.notifiers().subscribe(*this);
}

ExternalTlb::~ExternalTlb() {
    // Allowed after the chain's release(); waits until no invalidation in
    // flight can still call us.
    if (host_.notifiers().subscribed(*this)) host_.notifiers().unsubscribe(*this);
}

ExternalTlb::Context& ExternalTlb::context(std::uint32_t vcpu) const {
    if (vcpu >= vcpus_)
        throw std::out_of_range("ExternalTlb: vcpu " + std::to_string(vcpu) + " out of range (" +
                                std::to_string(vcpus_) + " vCPUs)");
    return contexts_[vcpu];
}

ExternalTlb::Entry* ExternalTlb::find(Context& ctx, std::uint64_t page, bool pending_too) const {
    Entry* set = &ctx.entries[set_of(page) * ways_];
    for (std::size_t w = 0; w < ways_; ++w)
        if (set[w].valid && set[w].page == page && (pending_too || !set[w].pending)) return &set[w];
    return nullptr;
}

TlbResult ExternalTlb::finish(SlotCounters& c, TlbStatus s) {
    switch (s) {
    case TlbStatus::Retry: bump(c.retries); break;
    case TlbStatus::NoMapping: bump(c.no_mapping); break;
    case TlbStatus::Refused: bump(c.refused); break;
    case TlbStatus::OutOfFrames: bump(c.out_of_frames); break;
    case TlbStatus::Hit:
    case TlbStatus::Refilled: break;
    }
    return {s, 0, false};
}

TlbResult ExternalTlb::translate(std::uint32_t vcpu, std::uint64_t host_address, Access access) {
    Context& ctx = context(vcpu);
    SlotCounters& c = ctx.c;
    bump(c.translations);
    const std::uint64_t page = host_address & ~(kPage - 1);
    {
        std::lock_guard lock(ctx.lock);
        if (released_.load(std::memory_order_acquire)) return finish(c, TlbStatus::NoMapping);
        if (Entry* e = find(ctx, page); e && (access == Access::Read || e->writable)) {
            e->accessed = true;
            bump(c.hits);
            return {TlbStatus::Hit, e->pfn, e->writable};
        }
    }
    bump(c.misses);
    // The GRU backs off while any range invalidation is active.
    if (range_active_.load(std::memory_order_acquire) != 0) return finish(c, TlbStatus::Retry);

    const HostFaultResult r = host_.fault(page, access);
    switch (r.status) {
    case HostFaultStatus::Mapped: break;
    case HostFaultStatus::NoMapping: return finish(c, TlbStatus::NoMapping);
    case HostFaultStatus::ReadOnly: return finish(c, TlbStatus::Refused);
    case HostFaultStatus::OutOfFrames: return finish(c, TlbStatus::OutOfFrames);
    }
    if (after_host_lookup) after_host_lookup(vcpu, host_address);
    const HostTranslation t = r.translation;

    // Reserve the entry: a pending entry serves no hit, and every flush that
    // covers its page cancels it. So the host.lookup below, which runs
    // without the TLB lock, is ordered against the flushes: one that comes
    // before the commit cancels the reservation, one that comes after
    // drops the committed entry.
    Entry* e;
    std::uint64_t token;
    {
        std::lock_guard lock(ctx.lock);
        if (released_.load(std::memory_order_acquire)) return finish(c, TlbStatus::NoMapping);
        // A start that already flushed this TLB but whose host change may
        // not have happened yet: the reservation would miss its flush.
        if (range_active_.load(std::memory_order_acquire) != 0) return finish(c, TlbStatus::Retry);
        e = find(ctx, page, true);
        if (!e) {
            Entry* set = &ctx.entries[set_of(page) * ways_];
            for (std::size_t w = 0; w < ways_ && !e; ++w)
                if (!set[w].valid) e = &set[w];
            if (!e) {
                e = &set[ctx.victim++ % ways_];
                bump(c.evictions);
            }
        }
        token = ++ctx.next_token;
        *e = Entry{page, t.pfn, token, true, true, t.writable, false};
    }
    if (after_reserve) after_reserve(vcpu, host_address);
    // Re-validate: a whole start..end (or an invalidate_page) since the host
    // fault has changed the translation the refill holds.
    const auto now = host_.lookup(page);
    const bool changed = !now || now->pfn != t.pfn || now->writable != t.writable;

    std::lock_guard lock(ctx.lock);
    if (while_locked) while_locked(vcpu, host_address);
    // The slot is ours only if no flush or other refill took it meanwhile.
    const bool ours = e->valid && e->pending && e->token == token && e->page == page;
    if (!ours) {
        bump(c.cancelled);
        return finish(c, TlbStatus::Retry);
    }
    if (released_.load(std::memory_order_acquire) || range_active_.load(std::memory_order_acquire) != 0 || changed) {
        e->valid = false;
        if (changed) bump(c.revalidation_failures);
        return finish(c, released_.load(std::memory_order_acquire) ? TlbStatus::NoMapping : TlbStatus::Retry);
    }
    e->pending = false;
    e->accessed = true;
    bump(c.refills);
    return {TlbStatus::Refilled, t.pfn, t.writable};
}

std::optional<TlbEntryView> ExternalTlb::probe(std::uint32_t vcpu, std::uint64_t host_address) const {
    Context& ctx = context(vcpu);
    std::lock_guard lock(ctx.lock);
    const Entry* e = find(ctx, host_address & ~(kPage - 1));
    if (!e) return std::nullopt;
    return TlbEntryView{e->pfn, e->writable, e->accessed};
}

std::size_t ExternalTlb::valid_entries(std::uint32_t vcpu) const {
    Context& ctx = context(vcpu);
    std::lock_guard lock(ctx.lock);
    std::size_t n = 0;
    for (std::size_t i = 0; i < sets_ * ways_; ++i) n += ctx.entries[i].valid && !ctx.entries[i].pending;
    return n;
}

void ExternalTlb::flush_vcpu(std::uint32_t vcpu) {
    Context& ctx = context(vcpu);
    std::lock_guard lock(ctx.lock);
    bump(inv_.entries_dropped, flush_locked(ctx, 0, kAddressLimit));
}

std::size_t ExternalTlb::flush_locked(Context& ctx, std::uint64_t start, std::uint64_t end) {
    std::size_t dropped = 0;
    auto drop = [&](Entry& e) {
        if (e.valid && e.page >= start && e.page < end) {
            e.valid = false;
            if (!e.pending) ++dropped; // a cancelled reservation held no translation
        }
    };
    const std::uint64_t pages = (end - start) / kPage;
    if (pages < sets_) {
        // A short range: only the sets its pages index.
        for (std::uint64_t a = start; a < end; a += kPage) {
            Entry* set = &ctx.entries[set_of(a) * ways_];
            for (std::size_t w = 0; w < ways_; ++w) drop(set[w]);
        }
    } else {
        for (std::size_t i = 0; i < sets_ * ways_; ++i) drop(ctx.entries[i]);
    }
    return dropped;
}

std::size_t ExternalTlb::flush_all_contexts(std::uint64_t start, std::uint64_t end) {
    std::size_t dropped = 0;
    for (std::uint32_t v = 0; v < vcpus_; ++v) {
        std::lock_guard lock(contexts_[v].lock);
        dropped += flush_locked(contexts_[v], start, end);
    }
    bump(inv_.flush_locks, vcpus_);
    bump(inv_.entries_dropped, dropped);
    return dropped;
}

StartResult ExternalTlb::invalidate_range_start(HostRange range, InvalidateEvent, bool blockable) {
    // Raise the counter before taking any TLB lock: a refill that installs
    // under a lock after our flush of that TLB must see it.
    range_active_.fetch_add(1, std::memory_order_seq_cst);
    bump(inv_.shared_atomics);
    if (blockable) {
        flush_all_contexts(range.start, range.end);
    } else {
        // May not sleep: take every TLB lock without waiting, or give up.
        std::uint32_t locked = 0;
        for (; locked < vcpus_; ++locked)
            if (!contexts_[locked].lock.try_lock()) break;
        if (locked < vcpus_) {
            for (std::uint32_t v = 0; v < locked; ++v) contexts_[v].lock.unlock();
            // The chain sends no end to a subscriber that refused its start.
            range_active_.fetch_sub(1, std::memory_order_seq_cst);
            bump(inv_.shared_atomics);
            bump(inv_.try_again);
            return StartResult::TryAgain;
        }
        std::size_t dropped = 0;
        for (std::uint32_t v = 0; v < vcpus_; ++v) {
            dropped += flush_locked(contexts_[v], range.start, range.end);
            contexts_[v].lock.unlock();
        }
        bump(inv_.flush_locks, vcpus_);
        bump(inv_.entries_dropped, dropped);
    }
    bump(inv_.range_flushes);
    return StartResult::Ok;
}

void ExternalTlb::invalidate_range_end(HostRange, InvalidateEvent) noexcept {
    range_active_.fetch_sub(1, std::memory_order_seq_cst);
    bump(inv_.shared_atomics);
}

void ExternalTlb::invalidate_page(std::uint64_t host_address, InvalidateEvent) {
    const std::uint64_t page = host_address & ~(kPage - 1);
    flush_all_contexts(page, page + kPage);
    bump(inv_.page_flushes);
}

bool ExternalTlb::clear_young(HostRange range) {
    bool young = false;
    for (std::uint32_t v = 0; v < vcpus_; ++v) {
        Context& ctx = contexts_[v];
        std::lock_guard lock(ctx.lock);
        for (std::size_t i = 0; i < sets_ * ways_; ++i) {
            Entry& e = ctx.entries[i];
            if (e.valid && !e.pending && e.accessed && e.page >= range.start && e.page < range.end) {
                e.accessed = false;
                young = true;
            }
        }
    }
    bump(inv_.flush_locks, vcpus_);
    return young;
}

bool ExternalTlb::test_young(HostRange range) {
    for (std::uint32_t v = 0; v < vcpus_; ++v) {
        Context& ctx = contexts_[v];
        std::lock_guard lock(ctx.lock);
        bump(inv_.flush_locks);
        for (std::size_t i = 0; i < sets_ * ways_; ++i) {
            const Entry& e = ctx.entries[i];
            if (e.valid && !e.pending && e.accessed && e.page >= range.start && e.page < range.end) return true;
        }
    }
    return false;
}

void ExternalTlb::release() {
    // Stop first: a refill re-checks this under its TLB lock, so nothing is
    // installed after the flush below has passed its TLB.
    released_.store(true, std::memory_order_seq_cst);
    flush_all_contexts(0, kAddressLimit);
    bump(inv_.range_flushes);
}

std::vector<std::string> ExternalTlb::audit() const {
    std::vector<std::string> problems;
    for (std::uint32_t v = 0; v < vcpus_; ++v) {
        // Copied under the TLB lock, compared after it: nothing calls into
        // the host with a TLB lock held (see the header's lock order).
        std::vector<Entry> usable;
        {
            std::lock_guard lock(contexts_[v].lock);
            for (std::size_t i = 0; i < sets_ * ways_; ++i)
                if (contexts_[v].entries[i].valid && !contexts_[v].entries[i].pending)
                    usable.push_back(contexts_[v].entries[i]);
        }
        for (const Entry& e : usable) {
            const auto now = host_.lookup(e.page);
            const std::string what = "external TLB context " + std::to_string(v) + " maps host " + hex(e.page) +
                                     " -> frame " + hex(e.pfn) + (e.writable ? " (rw)" : " (ro)");
            if (!now)
                problems.push_back(what + " but the host page is not present");
            else if (now->pfn != e.pfn)
                problems.push_back(what + " but the host maps frame " + hex(now->pfn));
            else if (e.writable && !now->writable)
                problems.push_back(what + " but the host page is read-only");
        }
    }
    return problems;
}

ExternalTlbCounters ExternalTlb::counters() const {
    ExternalTlbCounters s;
    for (std::uint32_t v = 0; v < vcpus_; ++v) {
        const SlotCounters& c = contexts_[v].c;
        s.translations += get(c.translations);
        s.hits += get(c.hits);
        s.misses += get(c.misses);
        s.refills += get(c.refills);
        s.retries += get(c.retries);
        s.no_mapping += get(c.no_mapping);
        s.refused += get(c.refused);
        s.out_of_frames += get(c.out_of_frames);
        s.evictions += get(c.evictions);
        s.cancelled += get(c.cancelled);
        s.revalidation_failures += get(c.revalidation_failures);
    }
    s.range_flushes = get(inv_.range_flushes);
    s.page_flushes = get(inv_.page_flushes);
    s.entries_dropped = get(inv_.entries_dropped);
    s.flush_locks = get(inv_.flush_locks);
    s.shared_atomics = get(inv_.shared_atomics);
    s.try_again = get(inv_.try_again);
    return s;
}

} // namespace hv::mmu
