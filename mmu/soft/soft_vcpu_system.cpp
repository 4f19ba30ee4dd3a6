// Runs of the software vCPUs: the access streams, the churn threads
// (HostChurn, SoftChurn) and the external-TLB device beside them, the time
// limit that ends a run whatever its threads do, the final verification of
// every stamp, and SoftRig. See soft_vcpu.hpp.
#include "mmu/base/seeded_random.hpp"
#include "mmu/base/units.hpp"
#include "mmu/soft/soft_vcpu.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iterator>
#include <latch>
#include <optional>
#include <stdexcept>
#include <thread>

namespace hv::mmu {

namespace {
constexpr std::uint32_t kSlots = kPage / 8;

using Rng = SplitMix;
using Clock = std::chrono::steady_clock;

// How long churn and device threads get to stop once the vCPUs are done,
// when the time limit has passed already.
constexpr std::chrono::seconds kHelperStopWait{2};

Clock::duration to_duration(double s) {
    return std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(s));
}

// Polls `done` until it holds (true) or `deadline` passes (false).
bool wait_until(const std::function<bool()>& done, Clock::time_point deadline) {
    while (!done()) {
        if (Clock::now() >= deadline) return false;
        std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    return true;
}

double time_limit_of(const SoftRunConfig& c) {
    if (c.time_limit > 0) return c.time_limit;
    if (c.ops_per_vcpu) return static_cast<double>(SoftVcpuSystem::kOpsTimeLimit.count());
    return c.seconds + static_cast<double>((SoftVcpuSystem::kChurnQuotaWait + SoftVcpuSystem::kTimeLimitSlack).count());
}

} // namespace

// Past the time limit: everything still waiting or refaulting gives up, and
// the run reports why it ended (first, so no other detail crowds it out).
void SoftVcpuSystem::time_out(const SoftRunConfig& cfg, std::uint32_t still_running, const char* what,
                              SoftRunResult& res) {
    if (!res.timed_out) {
        std::lock_guard lock(details_mutex_);
        char limit[32];
        std::snprintf(limit, sizeof limit, "%g", time_limit_of(cfg));
        details_.insert(details_.begin(), std::string("time limit of ") + limit + " s reached with " +
                                              std::to_string(still_running) + " " + what +
                                              " still running (an access refaulting or a wait nobody answers); "
                                              "they were stopped");
    }
    res.timed_out = true;
    stop_ = true;
    churn_stop_ = true;
    abandon_waits_ = true;
}

void SoftVcpuSystem::stream(std::uint32_t v, const SoftRunConfig& cfg, const std::function<bool()>& quotas_met) {
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
        // The stop flag ends bounded runs too: one past its time limit.
        if (stop_.load(std::memory_order_relaxed)) break;
        if (cfg.ops_per_vcpu && i >= cfg.ops_per_vcpu && quotas_met()) break;
        const std::uint64_t page = base + (cfg.pattern == AccessPattern::Sequential ? (start + i) % n : rng.next() % n);
        const bool write = rng.unit() < cfg.write_fraction && may_write;
        enter(v);
        do_access(s, v, page, write ? Access::Write : Access::Read);
        leave(v);
    }
}

ChurnConfig SoftVcpuSystem::churn_config(const SoftRunConfig& cfg) {
    ChurnConfig c;
    c.host_base = host_base_;
    c.pages = cfg.region_pages();
    std::copy(std::begin(cfg.churn_rate), std::end(cfg.churn_rate), std::begin(c.rate));
    c.protect_hold = cfg.protect_hold;
    c.seed = cfg.seed;
    c.min_ops = cfg.min_churn_ops;
    // The excuse for a zeroed slot (verify_final, the access checks): an
    // unmap of the page started after the vCPU's last write completed.
    c.before_unmap = [this](std::uint64_t p) { unmap_started_[p].fetch_add(1, std::memory_order_acq_rel); };
    c.after_unmap = [this](std::uint64_t p) { unmap_done_[p].fetch_add(1, std::memory_order_acq_rel); };
    return c;
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
                const std::uint64_t cur = load_slot(host_.data_frames().bytes(t->pfn).data() + 8 * (v % kSlots));
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
            const std::uint64_t cur = load_slot(host_.data_frames().bytes(r.translation.pfn).data() + 8 * (v % kSlots));
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
    if (!std::isfinite(cfg.time_limit) || cfg.time_limit < 0)
        throw std::invalid_argument("SoftVcpuSystem::run: expected a time limit >= 0 seconds, got " +
                                    std::to_string(cfg.time_limit));
    sharing_ = cfg.sharing;
    model_pages_ = cfg.pages;
    for (std::uint32_t v = 0; v < cfg.vcpus; ++v)
        cpu_[v].model.assign(cfg.sharing == Sharing::Disjoint ? cfg.pages : pages_, Model{});
    stop_ = false;
    churn_stop_ = false;
    abandon_waits_ = false;
    {
        std::lock_guard lock(details_mutex_);
        details_.clear();
    }
    const ShootdownCounters sd_before = shootdown_counters();
    const HostCounters host_before = host_.counters();

    SoftRunResult res;
    // Built (and their rates checked) before any thread starts, so a bad
    // configuration throws with nothing to join.
    const ChurnConfig hooks = churn_config(cfg); // its unmap hooks serve SoftChurn too
    HostChurn churn(host_, hooks);
    std::optional<SoftChurn> soft_churn;
    if (cfg.soft_churn.any())
        soft_churn.emplace(*mmu_, cfg.soft_churn, host_base_, cfg.region_pages(), cfg.seed, cfg.min_churn_ops,
                           hooks.before_unmap, hooks.after_unmap);
    std::optional<SoftDevice> device;
    if (cfg.device_rate > 0)
        device.emplace(host_, SoftDeviceConfig{.rate = cfg.device_rate, .host_base = host_base_,
                                               .pages = cfg.region_pages(), .seed = cfg.seed});
    const std::function<bool()> quotas_met = [&] {
        return churn.quota_met() && (!soft_churn || soft_churn->quota_met());
    };
    // Start every vCPU at once: creating 1024 threads while the first ones
    // already run would take the creator many scheduler rounds. Each thread
    // counts itself out when done, so this thread waits with a deadline.
    std::latch go(1);
    std::atomic<std::uint32_t> vcpus_running{cfg.vcpus}, helpers_running{0};
    std::vector<std::thread> threads;
    threads.reserve(cfg.vcpus + 3);
    for (std::uint32_t v = 0; v < cfg.vcpus; ++v)
        threads.emplace_back([this, v, &cfg, &go, &quotas_met, &vcpus_running] {
            go.wait();
            stream(v, cfg, quotas_met);
            vcpus_running.fetch_sub(1, std::memory_order_release);
        });
    const auto helper = [&](std::function<void()> body) {
        helpers_running.fetch_add(1);
        threads.emplace_back([&go, &helpers_running, body = std::move(body)] {
            go.wait();
            body();
            helpers_running.fetch_sub(1, std::memory_order_release);
        });
    };
    if (churn.enabled()) helper([&] { churn.run(churn_stop_, res.churn); });
    if (soft_churn) helper([&] { soft_churn->run(churn_stop_, res.soft_churn); });
    if (device) helper([&] { device->run(churn_stop_); });

    const auto t0 = Clock::now();
    const auto limit = t0 + to_duration(time_limit_of(cfg));
    go.count_down();
    if (!cfg.ops_per_vcpu) {
        std::this_thread::sleep_until(std::min(limit, t0 + to_duration(cfg.seconds)));
        // A timed run meets the churn quota too: on a loaded machine the
        // churn thread can go the whole time without a CPU among 1024 vCPU
        // threads. Bounded so a run always ends.
        wait_until(quotas_met, std::min(limit, Clock::now() + kChurnQuotaWait));
        stop_ = true; // vCPUs finish (or abandon) their current access
    }
    if (!wait_until([&] { return vcpus_running.load(std::memory_order_acquire) == 0; }, limit))
        time_out(cfg, vcpus_running.load(), "vCPUs", res);
    res.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    churn_stop_ = true;
    // A helper stuck in a host operation (a shootdown nobody answers) is
    // given until the limit, or a moment when the limit already passed.
    if (!wait_until([&] { return helpers_running.load(std::memory_order_acquire) == 0; },
                    std::max(limit, Clock::now() + kHelperStopWait)))
        time_out(cfg, helpers_running.load(), "churn or device threads", res);
    for (auto& t : threads) t.join();

    for (std::uint32_t v = 0; v < cfg.vcpus; ++v) res.vcpu += cpu_[v].c;
    const ShootdownCounters sd = shootdown_counters();
    res.shootdown = {sd.shootdowns - sd_before.shootdowns,         sd.targets - sd_before.targets,
                     sd.requests - sd_before.requests,             sd.acks - sd_before.acks,
                     sd.idle_requests - sd_before.idle_requests, sd.flush_all - sd_before.flush_all,
                     sd.deferred - sd_before.deferred,           sd.abandoned - sd_before.abandoned};
    const HostCounters host_after = host_.counters();
    res.cow_breaks = host_after.cow_breaks - host_before.cow_breaks;
    res.host_merges = host_after.merged - host_before.merged;
    res.audit = mmu_->audit();
    for (std::string& line : audit_tlbs(cfg.vcpus)) res.audit.push_back(std::move(line));
    if (device) {
        res.device = device->counters();
        res.external_tlb = device->tlb_counters();
        for (std::string& line : device->audit()) res.audit.push_back(std::move(line));
    }
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

// ---- SoftFrames ----------------------------------------------------------------

std::size_t SoftFrames::table_frames(std::uint64_t pages, std::uint32_t vcpus) {
    // Per side: a leaf table per 512 pages, their directories, and the
    // levels above for an unaligned region; vCPUs' fault paths may each hold
    // a table frame they took but did not link.
    const std::uint64_t n = 2 * (pages / 512 + pages / (512 * 512) + 8) + vcpus + 64;
    return static_cast<std::size_t>((n + kFrameChunk - 1) / kFrameChunk * kFrameChunk); // whole chunks
}

SoftFrames::SoftFrames(std::size_t total, std::size_t table_frames)
    : memory(total), tables(std::span(memory.bytes(0).data(), total * kPage), 0, table_frames),
      data(std::span(memory.bytes(0).data(), total * kPage), table_frames, total) {}

// ---- SoftRig -----------------------------------------------------------------------

std::size_t SoftRig::auto_frames(const SoftRunConfig& c) {
    const std::uint64_t region = c.region_pages();
    // Data frames, copy-on-write and migration headroom, host and secondary
    // tables (one leaf per 512 pages each, plus the upper levels).
    return static_cast<std::size_t>(region + region / 4 + 2 * (region / 512 + 16) + 2 * std::uint64_t{c.vcpus} + 1024);
}

SoftRig::SoftRig(const SoftRunConfig& config, ShadowConfig policies, std::size_t nframes, TlbShootdown* shootdown)
    : frames(nframes ? nframes : auto_frames(config),
             std::min(SoftFrames::table_frames(config.region_pages(), config.vcpus),
                      (nframes ? nframes : auto_frames(config)) / 4)),
      host(frames.tables, frames.data), system(host, config.vcpus, config.tlb),
      mmu(host, [&] {
          policies.vcpus = config.vcpus;
          return policies;
      }(), shootdown ? shootdown : &system) {
    const std::uint64_t pages = config.region_pages();
    host.map_anonymous({kHostBase, kHostBase + pages * kPage}, true);
    // Memslots 1..n side by side over the region: as a VM has, one large
    // slot (more than 3/4 of the region, so that zaps there can exceed a
    // batch) and n - 1 small ones at its end.
    const std::uint64_t n = std::clamp<std::uint64_t>(config.memslots, 1, pages);
    const std::uint64_t small = std::max<std::uint64_t>(1, pages / (4 * n));
    std::uint64_t first = 0;
    for (std::uint64_t i = 0; i < n; ++i) {
        const std::uint64_t size = i == 0 ? pages - (n - 1) * small : small;
        mmu.add_memslot({static_cast<std::uint32_t>(i + 1), kGuestBase + first * kPage, size * kPage,
                         kHostBase + first * kPage, true});
        first += size;
    }
    system.attach(mmu, kGuestBase, kHostBase, pages);
}

} // namespace hv::mmu
