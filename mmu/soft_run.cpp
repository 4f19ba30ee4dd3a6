// Runs of the software vCPUs: the access streams, the host churn thread
// (HostChurn), the final verification of every stamp, and SoftRig. See soft_vcpu.hpp.
#include "hex.hpp"
#include "soft_vcpu.hpp"
#include "split_mix.hpp"

#include <algorithm>
#include <chrono>
#include <iterator>
#include <latch>
#include <stdexcept>
#include <thread>

namespace hv::mmu {

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint32_t kSlots = kPage / 8;

using Rng = SplitMix;

} // namespace

void SoftVcpuSystem::stream(std::uint32_t v, const SoftRunConfig& cfg, const HostChurn& churn) {
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
        if (cfg.ops_per_vcpu ? i >= cfg.ops_per_vcpu && churn.quota_met() : stop_.load(std::memory_order_relaxed))
            break;
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
    // Built (and its rates checked) before any thread starts, so a bad
    // configuration throws with nothing to join.
    HostChurn churn(host_, churn_config(cfg));
    std::thread churner;
    // Start every vCPU at once: creating 1024 threads while the first ones
    // already run would take the creator many scheduler rounds.
    std::latch go(1);
    std::vector<std::thread> threads;
    threads.reserve(cfg.vcpus);
    for (std::uint32_t v = 0; v < cfg.vcpus; ++v)
        threads.emplace_back([this, v, &cfg, &go, &churn] {
            go.wait();
            stream(v, cfg, churn);
        });
    if (churn.enabled()) churner = std::thread([&] {
        go.wait();
        churn.run(churn_stop_, res.churn);
    });
    const auto t0 = std::chrono::steady_clock::now();
    go.count_down();
    if (!cfg.ops_per_vcpu) {
        std::this_thread::sleep_for(std::chrono::duration<double>(cfg.seconds));
        // A timed run meets the churn quota too: on a loaded machine the
        // churn thread can go the whole time without a CPU among 1024 vCPU
        // threads. Bounded so a run always ends.
        const auto give_up = std::chrono::steady_clock::now() + kChurnQuotaWait;
        while (!churn.quota_met() && std::chrono::steady_clock::now() < give_up)
            std::this_thread::sleep_for(std::chrono::milliseconds(10));
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
    mmu.add_memslot({1, kGuestBase, pages * kPage, kHostBase, true});
    system.attach(mmu, kGuestBase, kHostBase, pages);
}

} // namespace hv::mmu
