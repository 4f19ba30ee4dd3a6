// Software vCPUs: the TLB and one access. See soft_vcpu.hpp for the model
// and the stamps; soft_shootdown.cpp has the shootdown protocol and
// soft_run.cpp runs them.
#include "mmu/soft/soft_vcpu.hpp"

#include "mmu/base/units.hpp"
#include "mmu/sync/sched_point.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <stdexcept>
#include <thread>

namespace hv::mmu {

namespace {
constexpr std::uint32_t kSlots = kPage / 8;
using Pte = X86PteFormat;

} // namespace

const char* to_string(AccessPattern p) { return p == AccessPattern::Sequential ? "seq" : "random"; }
const char* to_string(Sharing s) { return s == Sharing::Disjoint ? "disjoint" : "shared"; }
const char* to_string(TlbModel m) { return m == TlbModel::Recheck ? "recheck" : "hardware"; }

SoftVcpuCounters& SoftVcpuCounters::operator+=(const SoftVcpuCounters& o) {
    accesses += o.accesses; reads += o.reads; writes += o.writes; tlb_hits += o.tlb_hits; tlb_misses += o.tlb_misses;
    walks += o.walks; walk_fills += o.walk_fills; faults += o.faults; retries += o.retries; refused += o.refused;
    out_of_frames += o.out_of_frames; flushes_honoured += o.flushes_honoured;
    stale_dropped += o.stale_dropped; violations += o.violations; lost_writes += o.lost_writes;
    unmap_excused += o.unmap_excused; no_memslot += o.no_memslot;
    return *this;
}

SoftVcpuSystem::SoftVcpuSystem(HostAddressSpace& host, std::uint32_t vcpus, TlbConfig tlb)
    : host_(host), vcpus_(vcpus), tlb_(tlb) {
    if (vcpus == 0 || vcpus > kMaxVcpus)
        throw std::invalid_argument("SoftVcpuSystem: vcpus must be 1.." + std::to_string(kMaxVcpus) + ", got " +
                                    std::to_string(vcpus));
    if (tlb_.ways == 0) tlb_.ways = 1;
    if (tlb_.entries < tlb_.ways) tlb_.entries = tlb_.ways;
    sets_ = tlb_.entries / tlb_.ways;
    cpu_ = std::make_unique<Vcpu[]>(vcpus);
    for (std::uint32_t v = 0; v < vcpus; ++v) {
        cpu_[v].tlb.assign(std::size_t{sets_} * tlb_.ways, TlbEntry{});
        cpu_[v].next_way.assign(sets_, 0);
    }
}

SoftVcpuSystem::~SoftVcpuSystem() = default;

void SoftVcpuSystem::attach(ShadowMmu& mmu, std::uint64_t guest_base, std::uint64_t host_base, std::uint64_t pages) {
    mmu_ = &mmu;
    guest_base_ = guest_base;
    host_base_ = host_base;
    pages_ = pages;
    model_pages_ = pages;
    sharing_ = Sharing::Shared;
    unmap_started_ = std::make_unique<std::atomic<std::uint64_t>[]>(pages);
    unmap_done_ = std::make_unique<std::atomic<std::uint64_t>[]>(pages);
}

// ---- TLB -------------------------------------------------------------------

SoftVcpuSystem::TlbEntry* SoftVcpuSystem::tlb_find(Vcpu& s, std::uint64_t gpn) {
    const std::size_t set = gpn % sets_;
    for (std::uint32_t w = 0; w < tlb_.ways; ++w) {
        TlbEntry& e = s.tlb[set * tlb_.ways + w];
        if (e.tag == gpn + 1) return &e;
    }
    return nullptr;
}

void SoftVcpuSystem::tlb_fill(Vcpu& s, std::uint64_t gpn, Pfn pfn, bool writable) {
    TlbEntry* e = tlb_find(s, gpn);
    if (!e) {
        const std::size_t set = gpn % sets_;
        const std::uint32_t w = s.next_way[set];
        s.next_way[set] = (w + 1) % tlb_.ways;
        e = &s.tlb[set * tlb_.ways + w];
        if (e->tag) s.dropped.push_back(e->tag - 1); // evicted
    }
    *e = {gpn + 1, pfn, writable};
}

void SoftVcpuSystem::tlb_invalidate(Vcpu& s, std::span<const std::uint64_t> pages, bool all) {
    const auto drop = [&s](TlbEntry& e) {
        s.dropped.push_back(e.tag - 1);
        e.tag = 0;
    };
    if (all) {
        for (auto& e : s.tlb)
            if (e.tag) drop(e);
        return;
    }
    for (std::uint64_t ga : pages)
        if (TlbEntry* e = tlb_find(s, ga >> 12)) drop(*e);
}

void SoftVcpuSystem::release_tables(Vcpu& s, std::uint32_t v) {
    constexpr unsigned kLeafShift = 9; // a leaf table maps 512 pages
    std::sort(s.dropped.begin(), s.dropped.end());
    std::uint64_t last_table = ~0ull;
    for (const std::uint64_t gpn : s.dropped) {
        const std::uint64_t table = gpn >> kLeafShift;
        if (table == last_table) continue;
        last_table = table;
        const bool held = std::any_of(s.tlb.begin(), s.tlb.end(),
                                      [&](const TlbEntry& e) { return e.tag && (e.tag - 1) >> kLeafShift == table; });
        if (!held) mmu_->leave_table(v, gpn << 12);
    }
    s.dropped.clear();
}

bool SoftVcpuSystem::tlb_contains(std::uint32_t v, std::uint64_t guest_address) {
    Vcpu& s = cpu_[v];
    std::lock_guard lock(s.m);
    // A translation that a pending request covers is gone as far as the vCPU
    // is concerned: it honours the request before its next access.
    if (s.flush_pending.load(std::memory_order_acquire)) {
        if (s.pending_all) return false;
        const std::uint64_t page = guest_address & ~(kPage - 1);
        for (std::uint64_t p : s.pending_pages)
            if (p == page) return false;
    }
    return tlb_find(s, guest_address >> 12) != nullptr;
}

SoftVcpuCounters SoftVcpuSystem::vcpu_counters(std::uint32_t v) const { return cpu_[v].c; }

// ---- Accesses -----------------------------------------------------------------

bool SoftVcpuSystem::slot_owner(std::uint32_t v) const { return sharing_ == Sharing::Disjoint || v < kSlots; }

void SoftVcpuSystem::detail(std::string text) {
    std::lock_guard lock(details_mutex_);
    if (details_.size() < kMaxDetails) details_.push_back(std::move(text));
}

// One attempt at the load/store through TLB entry `e`: in the Recheck model
// under the host PT lock of the page (the host cannot move the page under
// it) and only while the entry agrees with the host PTE; in the Hardware
// model through the entry as it is.
SoftVcpuSystem::Step SoftVcpuSystem::try_access(Vcpu& s, std::uint32_t v, std::uint64_t page, Access access,
                                                TlbEntry& e) {
    const std::uint64_t ga = guest_base_ + page * kPage;
    const std::uint64_t ha = host_base_ + page * kPage;
    const bool owner = slot_owner(v);
    const std::uint64_t local = sharing_ == Sharing::Disjoint ? page - std::uint64_t{v} * model_pages_ : page;
    std::uint8_t* slot = host_.data_frames().bytes(e.pfn).data() + 8 * (v % kSlots);
    std::uint64_t cur = 0, stamp = 0, unmap_done = 0;
    const auto load_and_store = [&] {
        cur = load_slot(slot);
        if (owner && access == Access::Write) {
            stamp = (std::uint64_t{v} + 1) << 40 | (++s.seq & ((1ull << 40) - 1));
            std::memcpy(slot, &stamp, 8);
            unmap_done = unmap_done_[page].load(std::memory_order_acquire);
        }
    };
    if (tlb_.model == TlbModel::Hardware) {
        load_and_store(); // through the entry as it is, stale or not
    } else {
        // Only the load and the store happen under the PT lock: every
        // nanosecond held here is one a preempted vCPU makes the host wait.
        auto guard = host_.lock_pte(ha, v);
        const std::uint64_t hp = guard ? guard.pte() : 0;
        if (!Pte::present(hp) || Pte::pfn(hp) != e.pfn || (e.writable && !Pte::writable(hp))) {
            stale_entry(s, v, ga, e, hp);
            return Step::Refault;
        }
        load_and_store();
    }
    if (!owner) return Step::Done;
    Model& m = s.model[local];
    if (cur != m.stamp) {
        if (cur == 0 && unmap_started_[page].load(std::memory_order_acquire) > m.unmap_done) {
            ++s.c.unmap_excused; // an unmap discarded the page after our write
        } else {
            ++s.c.lost_writes;
            detail("lost write: vCPU " + std::to_string(v) + " page " + hex(ga) + " frame " + hex(e.pfn) +
                   " slot holds " + hex(cur) + ", expected " + hex(m.stamp));
        }
        m.stamp = cur;
    }
    if (access == Access::Write) {
        m.stamp = stamp;
        m.unmap_done = unmap_done;
    }
    return Step::Done;
}

// A TLB entry that disagrees with the host PTE `hp` (the caller holds its PT
// lock). Honour whatever was sent to us; if the entry survives, a flush
// covering it was never requested: the protocol failed.
void SoftVcpuSystem::stale_entry(Vcpu& s, std::uint32_t v, std::uint64_t ga, const TlbEntry& e, std::uint64_t hp) {
    const TlbEntry before = e;
    bool survived;
    {
        std::lock_guard lock(s.m);
        honour(s);
        TlbEntry* now = tlb_find(s, ga >> 12);
        survived = now && now->pfn == before.pfn && now->writable == before.writable;
        if (now) {
            s.dropped.push_back(now->tag - 1);
            now->tag = 0;
        }
    }
    if (survived) {
        ++s.c.violations;
        detail("violation: vCPU " + std::to_string(v) + " used a stale translation of guest " + hex(ga) + " -> frame " +
               hex(before.pfn) + (before.writable ? " (rw)" : " (ro)") + "; the host PTE is " + hex(hp) +
               " and no flush for it was pending");
    } else {
        ++s.c.stale_dropped;
    }
}

bool SoftVcpuSystem::do_access(Vcpu& s, std::uint32_t v, std::uint64_t page, Access access) {
    const std::uint64_t ga = guest_base_ + page * kPage;
    const std::uint64_t gpn = ga >> 12;
    ++s.c.accesses;
    ++(access == Access::Write ? s.c.writes : s.c.reads);
    bool first = true;
    for (unsigned attempt = 0;; ++attempt) {
        // A run that is over abandons an access that keeps refaulting (a
        // broken protocol can leave a stale entry for good): its counters
        // report it instead of a hang.
        if (attempt > 0 && stop_.load(std::memory_order_relaxed)) return false;
        sched::point(sched::Point::AccessAttempt);
        check_boundary(s);
        if (!s.dropped.empty() && !mmu_->config().cpu_walks) {
            sched::point(sched::Point::TlbEntriesDropped); // dropped, then the masks left
            release_tables(s, v);
        }
        TlbEntry* e = tlb_find(s, gpn);
        if (e && (access == Access::Read || e->writable)) {
            if (first) ++s.c.tlb_hits;
        } else {
            if (first) ++s.c.tlb_misses;
            ++s.c.walks;
            // The walk joins the leaf table's shootdown targets before it
            // reads the entry, so any later zap of it flushes us.
            const std::uint64_t pte = mmu_->walk(v, ga);
            if (Pte::present(pte) && (access == Access::Read || Pte::writable(pte))) {
                tlb_fill(s, gpn, Pte::pfn(pte), Pte::writable(pte));
                ++s.c.walk_fills;
                e = tlb_find(s, gpn);
            } else {
                // A hole: fault, as "outside" so shootdowns never wait for us meanwhile.
                leave(v);
                const FaultResult r = mmu_->fault(v, ga, access);
                enter(v);
                ++s.c.faults;
                first = false;
                switch (r) {
                case FaultResult::Installed: continue;
                case FaultResult::Retry:
                    ++s.c.retries;
                    if (sched::controlled())
                        sched::yield(sched::Point::FaultRetry);
                    else
                        std::this_thread::yield(); // the invalidation in progress needs the CPU
                    continue;
                case FaultResult::Refused: ++s.c.refused; return false; // e.g. protected right now: skip
                case FaultResult::OutOfFrames: ++s.c.out_of_frames; return false;
                case FaultResult::NoMemslot: ++s.c.no_memslot; return false; // removed for now: no access happens
                }
                continue;
            }
        }
        first = false;
        sched::point(sched::Point::AccessTranslated);
        if (try_access(s, v, page, access, *e) == Step::Done) return true;
    }
}

bool SoftVcpuSystem::access_once(std::uint32_t v, std::uint64_t page, Access access) {
    enter(v);
    const bool ok = this->access(v, page, access);
    leave(v);
    return ok;
}

bool SoftVcpuSystem::access(std::uint32_t v, std::uint64_t page, Access access) {
    Vcpu& s = cpu_[v];
    if (s.model.empty()) s.model.assign(sharing_ == Sharing::Disjoint ? model_pages_ : pages_, Model{});
    return do_access(s, v, page, access);
}

std::size_t SoftVcpuSystem::unmap_pages(std::uint64_t first, std::uint64_t count) {
    if (first >= pages_ || count > pages_ - first)
        throw std::out_of_range("SoftVcpuSystem::unmap_pages: pages [" + std::to_string(first) + ", +" +
                                std::to_string(count) + ") leave the region of " + std::to_string(pages_));
    for (std::uint64_t p = first; p < first + count; ++p) unmap_started_[p].fetch_add(1, std::memory_order_acq_rel);
    const std::size_t n = host_.unmap({host_base_ + first * kPage, host_base_ + (first + count) * kPage});
    for (std::uint64_t p = first; p < first + count; ++p) unmap_done_[p].fetch_add(1, std::memory_order_acq_rel);
    return n;
}

std::vector<std::string> SoftVcpuSystem::details() {
    std::lock_guard lock(details_mutex_);
    return details_;
}

} // namespace hv::mmu
