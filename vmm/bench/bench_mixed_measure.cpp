#include "vmm/bench/bench_mixed_measure.hpp"

#include "mmu/base/units.hpp"
#include "vmm/bench/bench_rig.hpp"

#include <algorithm>
#include <atomic>
#include <chrono>
#include <mutex>
#include <span>
#include <stdexcept>
#include <stop_token>
#include <string>
#include <sys/resource.h>
#include <thread>
#include <utility>

namespace hv::bench {

namespace {

using namespace hv::mmu;
using Clock = std::chrono::steady_clock;
constexpr std::uint64_t kTablePages = 512; // one leaf table: 2 MiB
constexpr std::uint64_t kMinFaultPages = 8192;

std::uint64_t ns_between(Clock::time_point a, Clock::time_point b) {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(b - a).count());
}

// Times the calling thread was preempted so far (involuntary context switches).
std::uint64_t preemptions() {
    rusage u{};
    if (::getrusage(RUSAGE_THREAD, &u) != 0) return 0; // Linux has it; elsewhere the column stays 0
    return static_cast<std::uint64_t>(u.ru_nivcsw);
}

// Where everything lies in the rig's one region (and memslot): the zapped
// range first, then one region per fault thread, each a whole number of
// leaf tables. So no host or shadow leaf table (nor its split lock) is
// shared between them, and the zap's hull (where a fault must retry while
// the zap runs) covers none of the fault threads' pages.
struct Layout {
    std::uint64_t zap_pages = 0, lane_pages = 0;
    std::uint32_t lanes = 0;

    Layout(std::uint64_t size, std::uint32_t threads) : zap_pages(size / kPage), lanes(threads) {
        // Together as many fresh pages as the zap range has (at least 8192),
        // so frames for twice the size at most. A fault thread refreshes its
        // region from half-way whenever no zap runs (see run_lane), so it
        // enters a zap with at least half a region left. Only when zapping a
        // page costs more than faulting two (batch 1 with faults unhindered,
        // as under split) may it use them up inside a zap; then it waits for
        // the zap's end, and its samples cover the zap's first part only.
        const std::uint64_t per = std::max(zap_pages, kMinFaultPages) / threads;
        lane_pages = std::max(kTablePages, (per + kTablePages - 1) / kTablePages * kTablePages);
    }
    std::uint64_t pages() const { return zap_pages + lane_pages * lanes; }
    std::uint64_t lane_first(std::uint32_t lane) const { return zap_pages + std::uint64_t{lane} * lane_pages; }
};

// What the zapping thread and the fault threads share in one measurement.
// The zapper is vCPU `lanes` of the shadow MMU, fault thread i is vCPU i.
struct Shared {
    Shared(const Layout& l, LockPolicy lock, CoherencePolicy coh, std::size_t batch)
        : layout(l), rig(l.pages(), false), mmu(rig.add_shadow({lock, coh, batch, l.lanes + 1}, nullptr, l.pages())) {}

    Layout layout;
    BenchRig rig; // no shootdown target: nothing here caches entries (the flush is the guest's cost)
    ShadowMmu& mmu;
    // Odd while a zap is in progress: bumped by the zapper just before the
    // host unmap, and again by WindowEnd once the shadow MMU has zapped.
    alignas(64) std::atomic<std::uint64_t> epoch{0};
    // Held by the zapper across a zap and the reads of the zap counters
    // around it, and by a fault thread refreshing its region (a zap too,
    // counted in the same slot): so a refresh is never inside a window,
    // nor in its counts.
    std::mutex window;
    std::atomic<bool> failed{false};
};

// Ends each zap window. Subscribed after the shadow MMU, its
// invalidate_range_start runs once the shadow MMU has zapped the range: the
// chain calls subscribers in the order they subscribed, which it checks
// (the range's first entry must be gone by then). The host's own part of
// the unmap (clearing its PTEs, freeing the frames) holds no MMU lock, so
// faults made during it do not count as during the zap.
class WindowEnd final : public MmuNotifier {
public:
    WindowEnd(Shared& sh, HostRange zap) : sh_(sh), zap_(zap) { sh_.rig.host.notifiers().subscribe(*this); }
    ~WindowEnd() override { sh_.rig.host.notifiers().unsubscribe(*this); }
    WindowEnd(const WindowEnd&) = delete;
    WindowEnd& operator=(const WindowEnd&) = delete;

    // Called by the zapper after its unmap: when the window ended.
    Clock::time_point take_end() {
        if (!end_) throw std::logic_error("bench mixed: the zap window never ended (its marker was not called)");
        if (before_zap_)
            throw std::logic_error("bench mixed: the notifier chain called the window marker before the shadow "
                                   "MMU; expected subscribers in the order they subscribed");
        return *std::exchange(end_, std::nullopt);
    }

    StartResult invalidate_range_start(HostRange range, InvalidateEvent, bool) override {
        if (range != zap_) return StartResult::Ok; // a fault thread's refresh
        end_ = Clock::now();
        before_zap_ = sh_.mmu.entry(BenchRig::kGuest) != 0;
        sh_.epoch.fetch_add(1);
        return StartResult::Ok;
    }
    void invalidate_range_end(HostRange, InvalidateEvent) noexcept override {}
    void invalidate_page(std::uint64_t, InvalidateEvent) override {}
    bool clear_young(HostRange) override { return false; }
    bool test_young(HostRange) override { return false; }
    void release() override {}

private:
    Shared& sh_;
    const HostRange zap_;
    std::optional<Clock::time_point> end_; // the zapper's own thread runs the callback: no race
    bool before_zap_ = false;
};

// One fault thread's results, written by that thread only (`counted` is
// read by the zapper for its stopping rule).
struct alignas(64) Lane {
    std::vector<std::uint64_t> ns;        // the latency of every fault counted
    std::uint64_t retries = 0, locks = 0; // this vCPU's MMU counters over the faults counted
    std::uint64_t preempted = 0;          // faults counted in a stretch during which this thread was preempted
    std::atomic<std::uint64_t> counted{0};
    std::string error;
};

// A fault thread checks whether it was preempted at least this often (in
// faults), and whenever a zap begins or ends; when it was, the faults it
// counted since the last check count as preempted. A check is one system
// call; short stretches keep the count close to the faults preemption hit.
constexpr std::uint64_t kCheckEvery = 256;

enum class Count { All, DuringZaps };

// Fault thread `v`: faults the fresh pages of its region in order, timing
// each fault() call together with the retries it needed (a Retry is
// faulted again; the whole is one sample). Counts a fault that overlaps a
// zap window: the epoch was odd when it began, or moved before it ended.
// A used-up region is unmapped by the host (zapping it from the shadow MMU)
// so that its pages are fresh again; that is not timed and never inside a
// window: from half-way the thread refreshes whenever the window mutex is
// free, and waits for it only once the region is used up.
void run_lane(Shared& sh, Lane& lane, std::uint32_t v, Count count, std::uint64_t quota, std::stop_token stop) {
    const std::uint64_t first = sh.layout.lane_first(v), pages = sh.layout.lane_pages;
    const HostRange region{BenchRig::kHost + first * kPage, BenchRig::kHost + (first + pages) * kPage};
    const ShadowCounters& mine = sh.mmu.vcpu_counters(v);
    std::uint64_t next = 0; // the region's next fresh page
    std::size_t checked = 0; // faults counted before this index were counted before the last check
    std::uint64_t switches = preemptions(), seen = sh.epoch.load(), since_check = 0;
    const auto check = [&] {
        const std::uint64_t now = preemptions();
        if (now != switches) lane.preempted += lane.ns.size() - checked;
        switches = now;
        checked = lane.ns.size();
        since_check = 0;
    };
    while (!stop.stop_requested() && (quota == 0 || lane.ns.size() < quota) && !sh.failed.load()) {
        if (const std::uint64_t e = sh.epoch.load(); e != seen || since_check == kCheckEvery) {
            check();
            seen = e;
        }
        if (next >= pages / 2 && (next == pages || sh.epoch.load() % 2 == 0)) {
            std::unique_lock hold(sh.window, std::defer_lock);
            if (next == pages) hold.lock();
            else (void)hold.try_lock();
            if (hold.owns_lock()) {
                const std::size_t unmapped = sh.rig.host.unmap(region);
                if (unmapped != next)
                    throw std::runtime_error("refreshing fault thread " + std::to_string(v) + "'s region: expected " +
                                             std::to_string(next) + " pages present, unmapped " +
                                             std::to_string(unmapped));
                next = 0;
                check(); // a preemption while refreshing hit no fault
            }
        }
        const std::uint64_t page = first + next;
        const std::uint64_t e0 = sh.epoch.load();
        const std::uint64_t retries = mine.retries, locks = mine.lock_acquisitions;
        const auto t0 = Clock::now();
        FaultResult r;
        while ((r = sh.mmu.fault(v, BenchRig::kGuest + page * kPage, Access::Write)) == FaultResult::Retry) {
        }
        const auto t1 = Clock::now();
        const std::uint64_t e1 = sh.epoch.load();
        if (r != FaultResult::Installed)
            throw std::runtime_error("fault thread " + std::to_string(v) + ": fault of page " + std::to_string(page) +
                                     ": " + to_string(r));
        ++next;
        ++since_check;
        if (count == Count::DuringZaps && e0 % 2 == 0 && e1 == e0) continue;
        lane.ns.push_back(ns_between(t0, t1));
        lane.retries += mine.retries - retries;
        lane.locks += mine.lock_acquisitions - locks;
        lane.counted.store(lane.ns.size(), std::memory_order_relaxed);
    }
    check();
}


// The zapper (vCPU `lanes`) faults every page of the zap range in.
void populate(Shared& sh) {
    const std::uint32_t v = sh.layout.lanes;
    for (std::uint64_t p = 0; p < sh.layout.zap_pages; ++p) {
        FaultResult r;
        while ((r = sh.mmu.fault(v, BenchRig::kGuest + p * kPage, Access::Write)) == FaultResult::Retry) {
        }
        if (r != FaultResult::Installed)
            throw std::runtime_error("bench mixed: populating page " + std::to_string(p) + " failed: " + to_string(r));
    }
}

// The calling thread populates and zaps until MixedBenchConfig's stopping
// rule holds; the window of each zap runs from just before the host unmap
// to WindowEnd.
void zap_until_done(const MixedBenchConfig& config, Shared& sh, WindowEnd& end, std::span<const Lane> lanes,
                    MixedMeasurement& m) {
    const std::uint64_t pages = sh.layout.zap_pages;
    const HostRange range{BenchRig::kHost, BenchRig::kHost + pages * kPage};
    for (;;) {
        populate(sh);
        {
            std::lock_guard hold(sh.window);
            const ShadowCounters before = sh.mmu.zap_counters();
            const std::uint64_t preempted = preemptions();
            sh.epoch.fetch_add(1);
            const auto t0 = Clock::now();
            const std::size_t unmapped = sh.rig.host.unmap(range);
            const Clock::time_point t1 = end.take_end();
            if (preemptions() != preempted) ++m.zaps_preempted;
            const ShadowCounters after = sh.mmu.zap_counters();
            if (unmapped != pages)
                throw std::runtime_error("bench mixed: expected to unmap " + std::to_string(pages) +
                                         " pages, unmapped " + std::to_string(unmapped));
            m.window_ns += ns_between(t0, t1);
            m.zapped += after.zaps - before.zaps;
            m.holds += after.batches - before.batches;
            m.zap_locks += after.lock_acquisitions - before.lock_acquisitions;
        }
        ++m.zaps;
        if (sh.failed.load()) return;
        std::uint64_t counted = 0;
        for (const Lane& l : lanes) counted += l.counted.load(std::memory_order_relaxed);
        if (m.zaps >= config.min_zaps && (counted >= config.samples || m.zaps * pages >= config.zap_budget)) return;
    }
}

} // namespace

MixedMeasurement measure_mixed(const MixedBenchConfig& config, mmu::LockPolicy lock, mmu::CoherencePolicy coh,
                               std::optional<std::size_t> batch) {
    const std::uint32_t n = config.fault_threads;
    Shared sh(Layout(config.size, n), lock, coh, batch.value_or(512));
    WindowEnd end(sh, {BenchRig::kHost, BenchRig::kHost + sh.layout.zap_pages * kPage}); // idle too: the same chain
    std::vector<Lane> lanes(n);
    const Count count = batch ? Count::DuringZaps : Count::All;
    const std::uint64_t quota = batch ? 0 : (config.samples + n - 1) / n;
    for (Lane& l : lanes) l.ns.reserve((config.samples + n - 1) / n);
    MixedMeasurement m;
    {
        std::vector<std::jthread> threads; // declared after what they use: joined first, also on a throw
        threads.reserve(n);
        for (std::uint32_t v = 0; v < n; ++v)
            threads.emplace_back([&, v](std::stop_token stop) {
                try {
                    run_lane(sh, lanes[v], v, count, quota, stop);
                } catch (const std::exception& e) {
                    lanes[v].error = e.what();
                    sh.failed.store(true);
                }
            });
        if (batch) {
            zap_until_done(config, sh, end, lanes, m);
            for (std::jthread& t : threads) t.request_stop();
        }
        for (std::jthread& t : threads) t.join(); // idle: at their quota (a jthread's destructor would stop it)
    }
    for (const Lane& l : lanes)
        if (!l.error.empty()) throw std::runtime_error("bench mixed: " + l.error);
    for (const Lane& l : lanes) {
        m.ns.insert(m.ns.end(), l.ns.begin(), l.ns.end());
        m.retries += l.retries;
        m.locks += l.locks;
        m.faults_preempted += l.preempted;
    }
    return m;
}

} // namespace hv::bench
