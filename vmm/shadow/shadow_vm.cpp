#include "vmm/shadow/shadow_vm.hpp"

#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/thread_guard.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <string_view>

#include <sys/resource.h>
#include <unistd.h>

namespace hv {
namespace {

using Clock = std::chrono::steady_clock;
constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kHostBase = 0x7f0000000000; // where the region lives in the host address space
constexpr std::uint32_t kRegionSlot = 1;

constexpr std::string_view kCoherenceCheckLines = "coherence-check lines";

// Holds a churn between two of its operations for as long as it lives.
class ChurnPause {
public:
    explicit ChurnPause(std::shared_ptr<mmu::HostChurn> churn) : churn_(std::move(churn)) {
        if (churn_) churn_->pause();
    }
    ~ChurnPause() {
        if (churn_) churn_->resume();
    }
    ChurnPause(const ChurnPause&) = delete;
    ChurnPause& operator=(const ChurnPause&) = delete;

private:
    std::shared_ptr<mmu::HostChurn> churn_;
};

std::uint64_t ns_since(Clock::time_point t0) {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - t0).count());
}

} // namespace

unsigned LatencyHistogram::bucket(std::uint64_t ns) {
    if (ns < kSub) return static_cast<unsigned>(ns);
    const unsigned log = 63u - static_cast<unsigned>(std::countl_zero(ns)); // ns in [2^log, 2^(log+1))
    const unsigned sub = static_cast<unsigned>((ns >> (log - 2)) & (kSub - 1));
    return std::min(kBuckets - 1, log * kSub + sub);
}

std::uint64_t LatencyHistogram::lower(unsigned b) {
    if (b < kSub) return b;
    const unsigned log = b / kSub, sub = b % kSub;
    return std::uint64_t{kSub + sub} << (log - 2);
}

std::uint64_t LatencyHistogram::upper(unsigned b) {
    if (b < kSub) return b;
    const unsigned log = b / kSub, sub = b % kSub;
    return (std::uint64_t{kSub + sub + 1} << (log - 2)) - 1;
}

void LatencyHistogram::add(std::uint64_t ns) {
    ++count_;
    ++buckets_[bucket(ns)];
}

void LatencyHistogram::merge(const LatencyHistogram& o) {
    count_ += o.count_;
    for (unsigned b = 0; b < kBuckets; ++b) buckets_[b] += o.buckets_[b];
}

std::uint64_t LatencyHistogram::percentile(double p) const { return percentile_bucket(p).upper; }

LatencyHistogram::Bucket LatencyHistogram::percentile_bucket(double p) const {
    if (count_ == 0) return {0, 0};
    p = std::clamp(p, 0.0, 100.0);
    const auto rank = static_cast<std::uint64_t>(p / 100.0 * static_cast<double>(count_ - 1)) + 1;
    std::uint64_t seen = 0;
    unsigned b = 0;
    for (; b < kBuckets - 1; ++b) {
        seen += buckets_[b];
        if (seen >= rank) break;
    }
    return {lower(b), upper(b)};
}

std::string describe_percentiles(const LatencyHistogram& h) {
    const LatencyHistogram::Bucket p50 = h.percentile_bucket(50), p99 = h.percentile_bucket(99);
    using ull = unsigned long long;
    char line[256];
    std::snprintf(line, sizeof line,
                  "p50 %llu ns, p99 %llu ns (upper bounds of their histogram buckets: p50 in %llu-%llu ns, "
                  "p99 in %llu-%llu ns; %llu timed)",
                  static_cast<ull>(p50.upper), static_cast<ull>(p99.upper), static_cast<ull>(p50.lower),
                  static_cast<ull>(p50.upper), static_cast<ull>(p99.lower), static_cast<ull>(p99.upper),
                  static_cast<ull>(h.count()));
    return line;
}

ShadowVm::ShadowVm(GuestMemory& memory, const ShadowLayout& layout, std::uint32_t cpus, const ShadowOptions& options,
                   KvmShootdown::Kick kick, std::function<void(const std::string&)> log)
    : memory_(memory), layout_(layout), cpus_(cpus), options_(options), log_(std::move(log)), fault_ns_(cpus) {
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
    const std::uint64_t pages = layout.region_size / kPage;
    // No quiesce or report hook: verify() below holds the churn still and
    // logs in its own way (pausing, never stopping it), and never calls the
    // pager's verify().
    MmuPager::Hooks hooks;
    hooks.unmaps_started = [this, pages](std::uint64_t page) {
        return page < pages ? counter(layout_.unmap_started, page).load(std::memory_order_acquire) : 0;
    };
    hooks.retries_in_vmm = 64;
    pager_ = std::make_unique<MmuPager>(*mmu_, *host_, HV_SHADOW_REGION_BASE, layout.region_size, std::move(hooks));
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
    c.before_unmap = [this](std::uint64_t page) { unmap_starts(page); };
    c.after_unmap = [this](std::uint64_t page) { unmap_ends(page); };
    auto churn = std::make_shared<mmu::HostChurn>(*host_, std::move(c));
    if (!churn->enabled()) return;
    std::lock_guard lock(churn_mutex_);
    churn_ = churn;
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
    churn_done_ = true;
}

std::uint32_t ShadowVm::page_fault(std::uint32_t vcpu, std::uint64_t address, std::uint32_t error_code) {
    const auto t0 = Clock::now();
    const std::uint32_t status = pager_->page_fault(vcpu, address, error_code);
    if (vcpu < cpus_) fault_ns_[vcpu].add(ns_since(t0));
    return status;
}

// The counters live in the shared area (guest RAM), which the layout put
// inside RAM for every region page.
std::atomic_ref<std::uint64_t> ShadowVm::counter(std::uint64_t array, std::uint64_t page) const {
    return std::atomic_ref<std::uint64_t>(*memory_.word(array + page * sizeof(std::uint64_t)));
}
void ShadowVm::unmap_starts(std::uint64_t page) { counter(layout_.unmap_started, page).fetch_add(1, std::memory_order_seq_cst); }
void ShadowVm::unmap_ends(std::uint64_t page) { counter(layout_.unmap_done, page).fetch_add(1, std::memory_order_seq_cst); }

std::uint32_t ShadowVm::host_op(std::uint32_t op, std::uint64_t address, std::uint64_t address2, bool& changed) {
    host_ops_.fetch_add(1, std::memory_order_relaxed);
    const bool region = address >= HV_SHADOW_REGION_BASE && address - HV_SHADOW_REGION_BASE < layout_.region_size;
    if (op != HV_HOST_UNMAP || !region) return pager_->host_op(op, address, address2, changed);
    const std::uint64_t page = (address - HV_SHADOW_REGION_BASE) / kPage;
    unmap_starts(page);
    const std::uint32_t status = pager_->host_op(op, address, address2, changed);
    unmap_ends(page);
    return status;
}

// The churn is paused, not stopped, for the comparison: the guest decides
// when it calls HV_CALL_VERIFY, and must not be able to switch off the host
// operations the experiment asked for (abi.h). The lines it causes go
// through guest_log_, as it may call again and again.
std::uint32_t ShadowVm::verify(std::span<const hv_stamp> stamps, std::uint64_t guest_lost, std::uint64_t& lost,
                                std::uint64_t& checked) {
    checked = 0;
    lost = guest_lost;
    if (const std::uint32_t status = pager_->check_stamps(stamps); status != HV_OK) return status;
    {
        const ChurnPause pause(running_churn());
        pager_->compare(stamps, guest_lost, lost, checked, &guest_log_);
    }
    lost_.fetch_add(lost);
    verified_.store(true);
    guest_log_.print_with(kCoherenceCheckLines, [&] {
        return "coherence check: " + std::to_string(checked) + " stamps checked, " + std::to_string(lost - guest_lost) +
               " lost at the end, " + std::to_string(guest_lost) +
               " reported lost by the guest (seen while running): lost_writes=" + std::to_string(lost);
    });
    return HV_OK;
}

std::shared_ptr<mmu::HostChurn> ShadowVm::running_churn() {
    std::lock_guard lock(churn_mutex_);
    return churn_done_ ? nullptr : churn_;
}

bool ShadowVm::block_allowed(std::uint64_t gpa, std::uint64_t size) const {
    if (size > memory_.size() || gpa > memory_.size() - size) return false;
    const std::uint64_t end = gpa + size;
    return end <= layout_.low_end || (gpa >= layout_.shared_base && end <= layout_.stacks_top);
}

std::vector<std::string> ShadowVm::audit() {
    stop_churn();
    return mmu_->audit();
}

std::string ShadowVm::stats() const {
    const mmu::ShadowCounters f = mmu_->fault_counters();
    const mmu::ShadowCounters z = mmu_->zap_counters();
    const ShootdownStats sd = shootdown_->stats();
    LatencyHistogram all;
    for (const auto& h : fault_ns_) all.merge(h);
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
    add("  fault service        %s\n", describe_percentiles(all).c_str());
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
    add("  host ops (hypercall) %llu\n", static_cast<ull>(host_ops_.load()));
    const mmu::FrameCounters dc = data_frames_->counters();
    add("  frames               tables %llu of %llu in use (high water %llu), data %llu of %llu (high water %llu)\n",
        static_cast<ull>(fc.in_use), static_cast<ull>(frames_->allocatable()), static_cast<ull>(fc.high_water),
        static_cast<ull>(dc.in_use), static_cast<ull>(data_frames_->allocatable()), static_cast<ull>(dc.high_water));
    return s;
}

} // namespace hv
