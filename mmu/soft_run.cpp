// Runs of the software vCPUs: the access streams, the host churn thread,
// the final verification of every stamp, and SoftRig. See soft_vcpu.hpp.
#include "hex.hpp"
#include "soft_vcpu.hpp"

#include <algorithm>
#include <chrono>
#include <deque>
#include <latch>
#include <stdexcept>
#include <thread>

namespace hv::mmu {

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint32_t kSlots = kPage / 8;

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

} // namespace

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
        bool any = false, behind = false;
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
            behind = behind || out.attempted[op] < due;
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
        // Sleep only when nothing is due: among many busy vCPU threads a
        // sleeper waits its turn to run again, which can be milliseconds.
        if (!behind) std::this_thread::sleep_for(std::chrono::microseconds(any ? 50 : 200));
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
    res.shootdown = {sd.shootdowns - sd_before.shootdowns,         sd.targets - sd_before.targets,
                     sd.requests - sd_before.requests,             sd.acks - sd_before.acks,
                     sd.idle_requests - sd_before.idle_requests, sd.flush_all - sd_before.flush_all,
                     sd.deferred - sd_before.deferred};
    res.audit = mmu_->audit();
    for (std::string& line : audit_tlbs(cfg.vcpus)) res.audit.push_back(std::move(line));
    res.final_lost_writes = verify_final(cfg.vcpus);
    res.lost_writes = res.vcpu.lost_writes + res.final_lost_writes;
    res.violations = res.vcpu.violations;
    res.mmu = mmu_->counters();
    res.mmu_faults = mmu_->fault_counters();
    res.mmu_zaps = mmu_->zap_counters();
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
