#include "vmm/shadow/shadow_vm.hpp"

#include "mmu/base/units.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/thread_guard.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <algorithm>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string_view>

#include <sys/resource.h>
#include <unistd.h>

namespace hv {
namespace {
using hv::mmu::kPage;
constexpr std::uint64_t kHostBase = 0x7f0000000000; // where the region lives in the host address space
constexpr std::uint32_t kRegionSlot = 1;

} // namespace

ShadowVm::ShadowVm(GuestMemory& memory, const ShadowLayout& layout, std::uint32_t cpus, const ShadowOptions& options,
                   KvmShootdown::Kick kick, std::function<void(const std::string&)> log)
    : memory_(memory), layout_(layout), options_(options) {
    // The frame space is rewritten page by page by the MMU and the churn
    // while vCPUs run; letting the host collapse it into huge pages behind
    // our back only adds host-side invalidations of the guest's memory (in
    // the nested host, khugepaged doing so under 64 running vCPUs locked up
    // a CPU for minutes).
    memory.avoid_huge_pages();
    auto ram = memory.span(0, memory.size());
    // Tables and data pages from two pools. The tables live in VMM memory,
    // mirrored into guest RAM for the guest CPU to walk: the guest may
    // scribble on the mirror (through tables of its own), which changes its
    // own translations only; the MMU never reads it back.
    frames_ = std::make_unique<mmu::FrameSpace>(mmu::FrameSpace::Mirror{*ram}, layout.frames_begin / kPage,
                                                layout.tables_end / kPage);
    data_frames_ = std::make_unique<mmu::FrameSpace>(*ram, layout.tables_end / kPage, layout.frames_end / kPage);
    host_ = std::make_unique<mmu::HostAddressSpace>(*frames_, *data_frames_);
    shootdown_ = std::make_unique<KvmShootdown>(memory, HV_SHADOW_INFO, layout.slots, cpus, std::move(kick),
                                                options.skip_shootdown);
    mmu::ShadowConfig config = options.mmu;
    config.vcpus = cpus;
    config.cpu_walks = true;
    mmu_ = std::make_unique<mmu::ShadowMmu>(*host_, config, shootdown_.get());
    try {
        mmu_->map_static(0, layout.low_end, 0, true);
        mmu_->map_static(layout.shared_base, layout.stacks_top - layout.shared_base, layout.shared_base / kPage, true);
        host_->map_anonymous({kHostBase, kHostBase + layout.region_size}, true);
        mmu_->add_memslot({kRegionSlot, HV_SHADOW_REGION_BASE, layout.region_size, kHostBase, true});
    } catch (const std::exception& e) {
        throw VmmError(std::string("shadow mode: cannot set up the guest's tables: ") + e.what() + "; raise --mem");
    }
    MmuPager::Setup setup;
    setup.region = {HV_SHADOW_REGION_BASE, HV_SHADOW_REGION_BASE + layout.region_size};
    setup.unmaps = unmap_counters();
    setup.call_ranges = {{0, layout.low_end}, {layout.shared_base, layout.stacks_top}};
    setup.log = [log = std::move(log)](std::string_view line) {
        if (log) log(std::string(line));
    };
    pager_ = std::make_unique<MmuPager>(*mmu_, *host_, std::move(setup));
    write_info();
}

ShadowVm::~ShadowVm() {
    shootdown_->stop();
    stop_churn();
}

void ShadowVm::write_info() {
    hv_shadow_info info{};
    info.region_base = HV_SHADOW_REGION_BASE;
    info.region_size = layout_.region_size;
    info.slots = layout_.slots;
    info.unmap_started = layout_.unmap_started;
    info.unmap_done = layout_.unmap_done;
    info.flags = options_.skip_shootdown ? HV_SHADOW_SKIP_SHOOTDOWN : 0;
    if (!memory_.write_obj(HV_SHADOW_INFO, info)) throw VmmError("internal: hv_shadow_info outside guest RAM");
    // The shared area starts zeroed: no requests, no unmaps.
    auto shared = memory_.span(layout_.shared_base, layout_.stacks_base - layout_.shared_base);
    std::fill(shared->begin(), shared->end(), std::uint8_t{0});
}

void ShadowVm::set_tsc_khz(std::uint64_t khz) {
    std::atomic_ref<std::uint64_t>(*memory_.word(HV_SHADOW_INFO + offsetof(hv_shadow_info, tsc_khz))).store(khz);
}

void ShadowVm::start_churn() {
    mmu::ChurnConfig c;
    c.host_base = kHostBase;
    c.pages = layout_.region_size / kPage;
    std::copy(std::begin(options_.churn_rate), std::end(options_.churn_rate), std::begin(c.rate));
    c.seed = options_.seed;
    const UnmapCounters unmaps = unmap_counters();
    c.before_unmap = [unmaps](std::uint64_t page) { unmaps.begin(page); };
    c.after_unmap = [unmaps](std::uint64_t page) { unmaps.end(page); };
    auto churn = std::make_shared<mmu::HostChurn>(*host_, std::move(c));
    if (!churn->enabled()) return;
    std::lock_guard lock(churn_mutex_);
    pager_->hold_still_while_verifying(churn);
    churn_thread_ = std::thread([this, churn] {
        raise_churn_priority();
        run_guarded("host churn", [&] { churn->run(churn_stop_, churn_counters_); },
                    [this](const std::string& reason) {
                        if (failure_) failure_(reason);
                    });
    });
}

// Among 1024 busy vCPU threads on 2 cores a nice-0 churn thread gets about a
// thousandth of the CPU: in the nested host a 1024-vCPU coherence run with
// --churn migrate=200 attempted 52 migrates in 180 s, at nice -20 205 in
// 243 s (the host's own memory work is not starved by its guests either).
// The thread sleeps between operations, so a higher weight does not make it
// take more than its rates need. Without CAP_SYS_NICE it stays at nice 0
// (--stats says).
void ShadowVm::raise_churn_priority() {
    if (::setpriority(PRIO_PROCESS, static_cast<id_t>(::gettid()), kChurnNice) == 0)
        churn_nice_.store(kChurnNice);
    else
        churn_nice_error_.store(errno);
}

void ShadowVm::stop_churn() {
    std::lock_guard lock(churn_mutex_);
    churn_stop_.store(true, std::memory_order_release);
    if (churn_thread_.joinable()) churn_thread_.join();
    pager_->hold_still_while_verifying(nullptr);
}

// The counters live in the shared area (guest RAM), which the layout put
// inside RAM, 8-byte aligned, for every region page.
UnmapCounters ShadowVm::unmap_counters() const {
    const std::uint64_t pages = layout_.region_size / kPage;
    auto words = [&](std::uint64_t gpa) {
        return std::span<std::uint64_t>(memory_.word(gpa), pages);
    };
    return UnmapCounters(words(layout_.unmap_started), words(layout_.unmap_done));
}

std::vector<std::string> ShadowVm::audit() {
    stop_churn();
    return mmu_->audit();
}

std::string ShadowVm::stats() const {
    const mmu::ShadowCounters f = mmu_->fault_counters();
    const mmu::ShadowCounters z = mmu_->zap_counters();
    const ShootdownStats sd = shootdown_->stats();
    const mmu::FrameCounters fc = frames_->counters();
    std::string s;
    char line[256];
    auto add = [&](const char* fmt, auto... args) {
        std::snprintf(line, sizeof line, fmt, args...);
        s += line;
    };
    using ull = unsigned long long;
    add("  paging               shadow (lock %s, coherence %s, batch %llu)\n", mmu::to_string(options_.mmu.lock),
        mmu::to_string(options_.mmu.coherence), static_cast<ull>(options_.mmu.batch));
    add("  faults               %llu (installs %llu, retries %llu, no memslot %llu, refused %llu, no memory %llu)\n",
        static_cast<ull>(f.faults), static_cast<ull>(f.installs), static_cast<ull>(f.retries),
        static_cast<ull>(f.no_memslot), static_cast<ull>(f.refused), static_cast<ull>(f.out_of_frames));
    add("  fault service        %s\n", describe_percentiles(pager_->fault_latency()).c_str());
    add("  zaps                 %llu entries in %llu batches (largest %llu)\n", static_cast<ull>(z.zaps),
        static_cast<ull>(z.batches), static_cast<ull>(z.max_batch));
    add("  shootdowns           %llu, targets %llu (acknowledged in guest %llu, deferred to entry %llu), NMIs %llu, "
        "vCPUs not ready %llu%s\n",
        static_cast<ull>(sd.shootdowns), static_cast<ull>(sd.targets), static_cast<ull>(sd.waited),
        static_cast<ull>(sd.deferred), static_cast<ull>(sd.nmis), static_cast<ull>(sd.not_ready),
        options_.skip_shootdown ? " (skipped: --unsafe-skip-shootdown)" : "");
    add("  shootdown wait       total %.3f ms, max %.3f ms\n", static_cast<double>(sd.wait_ns) / 1e6,
        static_cast<double>(sd.max_wait_ns) / 1e6);
    std::string churn;
    for (std::size_t k = 0; k < mmu::kChurnOps; ++k) {
        if (options_.churn_rate[k] <= 0) continue;
        char b[96];
        std::snprintf(b, sizeof b, "%s%s %llu/%llu", churn.empty() ? "" : ", ", mmu::to_string(static_cast<mmu::ChurnOp>(k)),
                      static_cast<ull>(churn_counters_.done[k]), static_cast<ull>(churn_counters_.attempted[k]));
        churn += b;
    }
    if (!churn.empty()) {
        const int err = churn_nice_error_.load();
        add("  host churn           %s (done/attempted); thread nice %d%s%s\n", churn.c_str(), churn_nice_.load(),
            err ? ", setpriority failed: " : "", err ? std::strerror(err) : "");
    }
    add("  host ops (hypercall) %llu\n", static_cast<ull>(pager_->host_ops()));
    const mmu::FrameCounters dc = data_frames_->counters();
    add("  frames               tables %llu of %llu in use (high water %llu), data %llu of %llu (high water %llu)\n",
        static_cast<ull>(fc.in_use), static_cast<ull>(frames_->allocatable()), static_cast<ull>(fc.high_water),
        static_cast<ull>(dc.in_use), static_cast<ull>(data_frames_->allocatable()), static_cast<ull>(dc.high_water));
    return s;
}

} // namespace hv
