// Software vCPUs: see soft_vcpu.hpp for the model, the stamps and the
// shootdown protocol.
#include "soft_vcpu.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <deque>
#include <latch>
#include <stdexcept>
#include <thread>

namespace hv::mmu {

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint32_t kSlots = kPage / 8;
using Pte = X86PteFormat;

// splitmix64: a small, fast, seedable generator per thread.
struct Rng {
    std::uint64_t s;
    explicit Rng(std::uint64_t seed) : s(seed) {}
    std::uint64_t next() {
        std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }
};

std::string hex(std::uint64_t v) {
    char b[24];
    std::snprintf(b, sizeof b, "0x%llx", static_cast<unsigned long long>(v));
    return b;
}

std::uint64_t load_slot(const std::uint8_t* p) {
    std::uint64_t v;
    std::memcpy(&v, p, 8);
    return v;
}

} // namespace

const char* to_string(AccessPattern p) { return p == AccessPattern::Sequential ? "seq" : "random"; }
const char* to_string(Sharing s) { return s == Sharing::Disjoint ? "disjoint" : "shared"; }
const char* to_string(ChurnOp op) {
    switch (op) {
    case ChurnOp::Migrate: return "migrate";
    case ChurnOp::Unmap: return "unmap";
    case ChurnOp::Protect: return "protect";
    case ChurnOp::Merge: return "merge";
    case ChurnOp::Swap: return "swap";
    case ChurnOp::Age: return "age";
    }
    return "?";
}

SoftVcpuCounters& SoftVcpuCounters::operator+=(const SoftVcpuCounters& o) {
    accesses += o.accesses; reads += o.reads; writes += o.writes; tlb_hits += o.tlb_hits; tlb_misses += o.tlb_misses;
    walks += o.walks; walk_fills += o.walk_fills; faults += o.faults; retries += o.retries; refused += o.refused;
    out_of_frames += o.out_of_frames; registrations += o.registrations; flushes_honoured += o.flushes_honoured;
    stale_dropped += o.stale_dropped; violations += o.violations; lost_writes += o.lost_writes;
    unmap_excused += o.unmap_excused;
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
    }
    *e = {gpn + 1, pfn, writable};
}

void SoftVcpuSystem::tlb_invalidate(Vcpu& s, std::span<const std::uint64_t> pages, bool all) {
    if (all) {
        for (auto& e : s.tlb) e.tag = 0;
        return;
    }
    for (std::uint64_t ga : pages)
        if (TlbEntry* e = tlb_find(s, ga >> 12)) e->tag = 0;
}

bool SoftVcpuSystem::tlb_contains(std::uint32_t v, std::uint64_t guest_address) {
    Vcpu& s = cpu_[v];
    std::lock_guard lock(s.m);
    return tlb_find(s, guest_address >> 12) != nullptr;
}

// ---- Shootdown protocol ------------------------------------------------------

void SoftVcpuSystem::honour(Vcpu& s) {
    if (!s.flush_pending.load(std::memory_order_acquire)) return;
    tlb_invalidate(s, s.pending_pages, s.pending_all);
    s.pending_pages.clear();
    s.pending_all = false;
    ++s.c.flushes_honoured;
    s.flush_pending.store(false, std::memory_order_relaxed);
    s.acked.store(s.posted, std::memory_order_release);
    s.acked.notify_all();
}

void SoftVcpuSystem::check_boundary(Vcpu& s) {
    if (s.flush_pending.load(std::memory_order_acquire)) {
        std::lock_guard lock(s.m);
        honour(s);
    }
}

void SoftVcpuSystem::enter(std::uint32_t v) {
    Vcpu& s = cpu_[v];
    std::lock_guard lock(s.m);
    honour(s);
    s.in_access = true;
}

void SoftVcpuSystem::leave(std::uint32_t v) {
    Vcpu& s = cpu_[v];
    std::lock_guard lock(s.m);
    honour(s);
    s.in_access = false;
}

void SoftVcpuSystem::shootdown(const VcpuMask& targets, std::span<const std::uint64_t> pages) {
    sd_shootdowns_.fetch_add(1, std::memory_order_relaxed);
    const bool all = pages.size() > kFlushAllThreshold;
    if (all) sd_flush_all_.fetch_add(1, std::memory_order_relaxed);
    std::vector<std::pair<std::uint32_t, std::uint64_t>> waits;
    std::uint64_t ntargets = 0, direct = 0;
    targets.for_each([&](std::uint32_t v) {
        if (v >= vcpus_) return;
        ++ntargets;
        Vcpu& s = cpu_[v];
        std::lock_guard lock(s.m);
        if (!s.in_access) {
            tlb_invalidate(s, pages, all); // idle, finished or inside fault(): flush it from here
            ++direct;
            return;
        }
        if (all || s.pending_all || s.pending_pages.size() + pages.size() > kFlushAllThreshold) {
            s.pending_all = true;
            s.pending_pages.clear();
        } else {
            s.pending_pages.insert(s.pending_pages.end(), pages.begin(), pages.end());
        }
        waits.push_back({v, ++s.posted});
        s.flush_pending.store(true, std::memory_order_release);
    });
    sd_targets_.fetch_add(ntargets, std::memory_order_relaxed);
    sd_direct_.fetch_add(direct, std::memory_order_relaxed);
    sd_requests_.fetch_add(waits.size(), std::memory_order_relaxed);
    for (auto [v, seq] : waits) {
        auto& acked = cpu_[v].acked;
        for (std::uint64_t a = acked.load(std::memory_order_acquire); a < seq; a = acked.load(std::memory_order_acquire))
            acked.wait(a, std::memory_order_acquire);
    }
    sd_acks_.fetch_add(waits.size(), std::memory_order_relaxed);
}

ShootdownCounters SoftVcpuSystem::shootdown_counters() const {
    ShootdownCounters c;
    c.shootdowns = sd_shootdowns_.load();
    c.targets = sd_targets_.load();
    c.requests = sd_requests_.load();
    c.acks = sd_acks_.load();
    c.direct_flushes = sd_direct_.load();
    c.flush_all = sd_flush_all_.load();
    return c;
}

SoftVcpuCounters SoftVcpuSystem::vcpu_counters(std::uint32_t v) const { return cpu_[v].c; }

// ---- Accesses -----------------------------------------------------------------

bool SoftVcpuSystem::slot_owner(std::uint32_t v) const { return sharing_ == Sharing::Disjoint || v < kSlots; }

void SoftVcpuSystem::detail(std::string text) {
    std::lock_guard lock(details_mutex_);
    if (details_.size() < kMaxDetails) details_.push_back(std::move(text));
}

// One attempt at the load/store through TLB entry `e`, under the host PT
// lock of the page so the host cannot move the page under it.
SoftVcpuSystem::Step SoftVcpuSystem::try_access(Vcpu& s, std::uint32_t v, std::uint64_t page, Access access,
                                                TlbEntry& e) {
    const std::uint64_t ga = guest_base_ + page * kPage;
    const std::uint64_t ha = host_base_ + page * kPage;
    auto guard = host_.lock_pte(ha);
    const std::uint64_t hp = guard ? guard.pte() : 0;
    const bool stale = !Pte::present(hp) || Pte::pfn(hp) != e.pfn || (e.writable && !Pte::writable(hp));
    if (stale) {
        // Honour whatever was sent to us; if the entry survives, a flush
        // covering it was never requested: the protocol failed.
        const TlbEntry before = e;
        bool survived;
        {
            std::lock_guard lock(s.m);
            honour(s);
            TlbEntry* now = tlb_find(s, ga >> 12);
            survived = now && now->pfn == before.pfn && now->writable == before.writable;
            if (now) now->tag = 0;
        }
        if (survived) {
            ++s.c.violations;
            detail("violation: vCPU " + std::to_string(v) + " used a stale translation of guest " + hex(ga) +
                   " -> frame " + hex(before.pfn) + (before.writable ? " (rw)" : " (ro)") + "; the host PTE is " +
                   hex(hp) + " and no flush for it was pending");
        } else {
            ++s.c.stale_dropped;
        }
        return Step::Refault;
    }
    std::uint8_t* slot = host_.frames().bytes(e.pfn).data() + 8 * (v % kSlots);
    if (slot_owner(v)) {
        const std::uint64_t local = sharing_ == Sharing::Disjoint ? page - std::uint64_t{v} * model_pages_ : page;
        Model& m = s.model[local];
        const std::uint64_t cur = load_slot(slot);
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
            const std::uint64_t stamp = (std::uint64_t{v} + 1) << 40 | (++s.seq & ((1ull << 40) - 1));
            std::memcpy(slot, &stamp, 8);
            m.stamp = stamp;
            m.unmap_done = unmap_done_[page].load(std::memory_order_acquire);
        }
    } else {
        (void)load_slot(slot);
    }
    return Step::Done;
}

bool SoftVcpuSystem::do_access(Vcpu& s, std::uint32_t v, std::uint64_t page, Access access) {
    const std::uint64_t ga = guest_base_ + page * kPage;
    const std::uint64_t gpn = ga >> 12;
    ++s.c.accesses;
    ++(access == Access::Write ? s.c.writes : s.c.reads);
    bool first = true;
    for (unsigned attempt = 0;; ++attempt) {
        check_boundary(s);
        TlbEntry* e = tlb_find(s, gpn);
        if (e && (access == Access::Read || e->writable)) {
            if (first) ++s.c.tlb_hits;
        } else {
            if (first) ++s.c.tlb_misses;
            ++s.c.walks;
            const auto leaf = mmu_->table().find_leaf(ga);
            const std::uint64_t pte = leaf ? RadixTable<Pte>::load(*leaf) : 0;
            const bool usable = Pte::present(pte) && (access == Access::Read || Pte::writable(pte)) &&
                                s.registered.count(leaf->table) != 0;
            if (usable) {
                tlb_fill(s, gpn, Pte::pfn(pte), Pte::writable(pte));
                ++s.c.walk_fills;
                e = tlb_find(s, gpn);
            } else {
                // A hole (or a table we are not registered in): fault, as
                // "outside" so shootdowns never wait for us meanwhile.
                leave(v);
                const FaultResult r = mmu_->fault(v, ga, access);
                enter(v);
                ++s.c.faults;
                first = false;
                switch (r) {
                case FaultResult::Installed:
                    if (const auto l = mmu_->table().find_leaf(ga); l && s.registered.insert(l->table).second)
                        ++s.c.registrations;
                    continue;
                case FaultResult::Retry:
                    ++s.c.retries;
                    if (stop_.load(std::memory_order_relaxed)) return false; // the run is over
                    std::this_thread::yield(); // the invalidation in progress needs the CPU
                    continue;
                case FaultResult::Refused: ++s.c.refused; return false; // e.g. protected right now: skip
                case FaultResult::OutOfFrames: ++s.c.out_of_frames; return false;
                case FaultResult::NoMemslot:
                    throw std::logic_error("SoftVcpuSystem: no memslot for guest " + hex(ga));
                }
                continue;
            }
        }
        first = false;
        if (try_access(s, v, page, access, *e) == Step::Done) return true;
    }
}

bool SoftVcpuSystem::access_once(std::uint32_t v, std::uint64_t page, Access access) {
    Vcpu& s = cpu_[v];
    if (s.model.empty()) s.model.assign(sharing_ == Sharing::Disjoint ? model_pages_ : pages_, Model{});
    enter(v);
    const bool ok = do_access(s, v, page, access);
    leave(v);
    return ok;
}

// ---- Runs ----------------------------------------------------------------------

void SoftVcpuSystem::stream(std::uint32_t v, const SoftRunConfig& cfg) {
    Vcpu& s = cpu_[v];
    Rng rng(cfg.seed * 0x100000001b3ull + v * 0x9e3779b97f4a7c15ull + 1);
    const std::uint64_t n = cfg.sharing == Sharing::Disjoint ? cfg.pages : pages_;
    const std::uint64_t base = cfg.sharing == Sharing::Disjoint ? std::uint64_t{v} * cfg.pages : 0;
    const bool may_write = slot_owner(v);
    std::uint64_t start = cfg.pattern == AccessPattern::Sequential ? rng.next() % n : 0;
    // In access only for the duration of one access (as a CPU is in guest
    // mode only while it runs guest code): a vCPU thread preempted between
    // accesses is outside, so a shootdown flushes it directly instead of
    // waiting a scheduler round for it.
    for (std::uint64_t i = 0;; ++i) {
        if (cfg.ops_per_vcpu ? i >= cfg.ops_per_vcpu && churn_quota_met_.load(std::memory_order_acquire)
                             : stop_.load(std::memory_order_relaxed))
            break;
        const std::uint64_t page = base + (cfg.pattern == AccessPattern::Sequential ? (start + i) % n : rng.next() % n);
        const bool write = rng.unit() < cfg.write_fraction && may_write;
        enter(v);
        do_access(s, v, page, write ? Access::Write : Access::Read);
        leave(v);
    }
}

void SoftVcpuSystem::churn(const SoftRunConfig& cfg, ChurnCounters& out) {
    Rng rng(cfg.seed ^ 0xc0ffee);
    const std::uint64_t n = cfg.region_pages();
    std::deque<std::pair<std::chrono::steady_clock::time_point, std::uint64_t>> protected_pages;
    auto restore = [&](std::uint64_t p) {
        const std::uint64_t ha = host_base_ + p * kPage;
        host_.protect({ha, ha + kPage}, true);
    };
    std::uint64_t skipped[kChurnOps] = {};
    const auto t0 = std::chrono::steady_clock::now();
    while (!churn_stop_.load(std::memory_order_acquire)) {
        const auto now = std::chrono::steady_clock::now();
        const double elapsed = std::chrono::duration<double>(now - t0).count();
        bool any = false;
        for (std::size_t op = 0; op < kChurnOps; ++op) {
            if (cfg.churn_rate[op] <= 0) continue;
            // The first at t = 0; a backlog of more than 100 ms worth (the
            // thread was descheduled) is dropped rather than run back to
            // back, which would leave faults no window between invalidations.
            std::uint64_t due = static_cast<std::uint64_t>(elapsed * cfg.churn_rate[op]) + 1 - skipped[op];
            const auto cap = static_cast<std::uint64_t>(cfg.churn_rate[op] * 0.1) + 8;
            if (due > out.attempted[op] + cap) {
                skipped[op] += due - out.attempted[op] - cap;
                due = out.attempted[op] + cap;
            }
            for (int k = 0; k < 8 && out.attempted[op] < due; ++k) {
                any = true;
                ++out.attempted[op];
                const std::uint64_t p = rng.next() % n;
                const std::uint64_t ha = host_base_ + p * kPage;
                bool did = false;
                switch (static_cast<ChurnOp>(op)) {
                case ChurnOp::Migrate: did = host_.migrate(ha); break;
                case ChurnOp::Unmap:
                    unmap_started_[p].fetch_add(1, std::memory_order_acq_rel);
                    did = host_.unmap({ha, ha + kPage}) != 0;
                    unmap_done_[p].fetch_add(1, std::memory_order_acq_rel);
                    break;
                case ChurnOp::Protect:
                    did = host_.protect({ha, ha + kPage}, false) != 0;
                    protected_pages.push_back({now + cfg.protect_hold, p});
                    break;
                case ChurnOp::Merge: {
                    const std::uint64_t q = rng.next() % n;
                    did = host_.merge(ha, host_base_ + q * kPage);
                    break;
                }
                case ChurnOp::Swap: did = host_.swap_out(ha); break;
                case ChurnOp::Age: {
                    const std::uint64_t end = std::min(n, p + 16);
                    did = host_.age({ha, host_base_ + end * kPage});
                    break;
                }
                }
                if (did) ++out.done[op];
            }
        }
        if (!churn_quota_met_.load(std::memory_order_relaxed)) {
            bool met = true;
            for (std::size_t op = 0; op < kChurnOps; ++op)
                if (cfg.churn_rate[op] > 0 && out.attempted[op] < cfg.min_churn_ops) met = false;
            if (met) churn_quota_met_.store(true, std::memory_order_release);
        }
        while (!protected_pages.empty() && protected_pages.front().first <= now) {
            restore(protected_pages.front().second);
            protected_pages.pop_front();
        }
        // Sleep rather than yield: a thread woken from sleep is scheduled
        // promptly among many busy vCPU threads; a yielding one waits for all.
        std::this_thread::sleep_for(std::chrono::microseconds(any ? 50 : 200));
    }
    for (auto& [when, p] : protected_pages) restore(p);
}

std::uint64_t SoftVcpuSystem::verify_final(std::uint32_t vcpus) {
    std::uint64_t lost = 0;
    for (std::uint32_t v = 0; v < vcpus; ++v) {
        if (!slot_owner(v)) continue;
        Vcpu& s = cpu_[v];
        const std::uint64_t base = sharing_ == Sharing::Disjoint ? std::uint64_t{v} * model_pages_ : 0;
        for (std::uint64_t local = 0; local < s.model.size(); ++local) {
            const Model& m = s.model[local];
            const std::uint64_t page = base + local;
            const std::uint64_t ha = host_base_ + page * kPage;
            if (m.stamp == 0) {
                // Never written (or found zeroed): the slot must still be 0
                // wherever the page is present (anything else was misdirected).
                const auto t = host_.lookup(ha);
                if (!t) continue;
                const std::uint64_t cur = load_slot(host_.frames().bytes(t->pfn).data() + 8 * (v % kSlots));
                if (cur != 0) {
                    ++lost;
                    detail("final: vCPU " + std::to_string(v) + " page " + hex(guest_base_ + page * kPage) +
                           " slot holds " + hex(cur) + " but the vCPU never wrote it");
                }
                continue;
            }
            const HostFaultResult r = host_.fault(ha, Access::Read);
            if (r.status != HostFaultStatus::Mapped) {
                ++lost;
                detail("final: page " + hex(ha) + " cannot be read back: " + to_string(r.status));
                continue;
            }
            const std::uint64_t cur = load_slot(host_.frames().bytes(r.translation.pfn).data() + 8 * (v % kSlots));
            if (cur == m.stamp) continue;
            if (cur == 0 && unmap_started_[page].load() > m.unmap_done) continue; // discarded by an unmap
            ++lost;
            detail("final: vCPU " + std::to_string(v) + " page " + hex(guest_base_ + page * kPage) + " slot holds " +
                   hex(cur) + ", expected " + hex(m.stamp));
        }
    }
    return lost;
}

SoftRunResult SoftVcpuSystem::run(const SoftRunConfig& cfg) {
    if (!mmu_) throw std::logic_error("SoftVcpuSystem::run: attach() an MMU first");
    if (cfg.vcpus == 0 || cfg.vcpus > vcpus_)
        throw std::invalid_argument("SoftVcpuSystem::run: vcpus must be 1.." + std::to_string(vcpus_));
    if (cfg.vcpus > mmu_->config().vcpus) throw std::invalid_argument("SoftVcpuSystem::run: the MMU has fewer vCPUs");
    if (cfg.pages == 0 || cfg.region_pages() > pages_)
        throw std::invalid_argument("SoftVcpuSystem::run: the working set does not fit the attached region");
    sharing_ = cfg.sharing;
    model_pages_ = cfg.pages;
    for (std::uint32_t v = 0; v < cfg.vcpus; ++v)
        cpu_[v].model.assign(cfg.sharing == Sharing::Disjoint ? cfg.pages : pages_, Model{});
    stop_ = false;
    churn_stop_ = false;
    {
        std::lock_guard lock(details_mutex_);
        details_.clear();
    }
    const ShootdownCounters sd_before = shootdown_counters();

    SoftRunResult res;
    bool churning = false;
    for (double r : cfg.churn_rate) churning = churning || r > 0;
    std::thread churner;
    churn_quota_met_ = !churning || cfg.min_churn_ops == 0;
    // Start every vCPU at once: creating 1024 threads while the first ones
    // already run would take the creator many scheduler rounds.
    std::latch go(1);
    std::vector<std::thread> threads;
    threads.reserve(cfg.vcpus);
    for (std::uint32_t v = 0; v < cfg.vcpus; ++v)
        threads.emplace_back([this, v, &cfg, &go] {
            go.wait();
            stream(v, cfg);
        });
    if (churning) churner = std::thread([&] {
        go.wait();
        churn(cfg, res.churn);
    });
    const auto t0 = std::chrono::steady_clock::now();
    go.count_down();
    if (!cfg.ops_per_vcpu) {
        std::this_thread::sleep_for(std::chrono::duration<double>(cfg.seconds));
        churn_stop_ = true;
        stop_ = true; // vCPUs finish (or abandon) their current access
    }
    for (auto& t : threads) t.join();
    res.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    churn_stop_ = true;
    if (churner.joinable()) churner.join();

    for (std::uint32_t v = 0; v < cfg.vcpus; ++v) res.vcpu += cpu_[v].c;
    const ShootdownCounters sd = shootdown_counters();
    res.shootdown = {sd.shootdowns - sd_before.shootdowns, sd.targets - sd_before.targets,
                     sd.requests - sd_before.requests,     sd.acks - sd_before.acks,
                     sd.direct_flushes - sd_before.direct_flushes, sd.flush_all - sd_before.flush_all};
    res.audit = mmu_->audit();
    res.final_lost_writes = verify_final(cfg.vcpus);
    res.lost_writes = res.vcpu.lost_writes + res.final_lost_writes;
    res.violations = res.vcpu.violations;
    res.mmu = mmu_->counters();
    {
        std::lock_guard lock(details_mutex_);
        res.details = details_;
    }
    return res;
}

// ---- SoftRig -----------------------------------------------------------------------

std::size_t SoftRig::auto_frames(const SoftRunConfig& c) {
    const std::uint64_t region = c.region_pages();
    // Data frames, copy-on-write and migration headroom, host and secondary
    // tables (one leaf per 512 pages each, plus the upper levels).
    return static_cast<std::size_t>(region + region / 4 + 2 * (region / 512 + 16) + 2 * std::uint64_t{c.vcpus} + 1024);
}

SoftRig::SoftRig(const SoftRunConfig& config, ShadowConfig policies, std::size_t nframes, TlbShootdown* shootdown)
    : frames(nframes ? nframes : auto_frames(config)), host(frames), system(host, config.vcpus, config.tlb),
      mmu(host, [&] {
          policies.vcpus = config.vcpus;
          return policies;
      }(), shootdown ? shootdown : &system) {
    const std::uint64_t pages = config.region_pages();
    host.map_anonymous({kHostBase, kHostBase + pages * kPage}, true);
    mmu.add_memslot({1, kGuestBase, pages * kPage, kHostBase, true});
    system.attach(mmu, kGuestBase, kHostBase, pages);
}

} // namespace hv::mmu
