#include "vmm/bench/bench_fault.hpp"

#include "mmu/base/units.hpp"
#include "vmm/bench/bench_rig.hpp"
#include "vmm/bench/linux_baseline.hpp"

#include <algorithm>
#include <chrono>
#include <latch>
#include <stdexcept>
#include <thread>

namespace hv::bench {

namespace {

using namespace hv::mmu;
using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kMaxVcpus = 1024;
constexpr std::uint64_t kTablePages = 512; // one leaf table maps 2 MiB

std::uint64_t round_to_table(std::uint64_t pages) { return (pages + kTablePages - 1) / kTablePages * kTablePages; }

// Region pages for `vcpus` vCPUs of `pages` faults each: disjoint, every
// vCPU's share starts on its own 2 MiB boundary.
std::uint64_t region_pages(std::uint32_t vcpus, std::uint64_t pages, Sharing sharing) {
    return sharing == Sharing::Disjoint ? std::uint64_t{vcpus} * round_to_table(pages) : round_to_table(pages);
}

struct FaultSample {
    double seconds = 0;
    ShadowCounters c; // the vCPUs' fault counters summed
};

// A fault that must end Installed; a Retry is faulted again (the caller of
// fault() must). Returns the error text, or empty.
std::string fault_installed(ShadowMmu& mmu, std::uint32_t v, std::uint64_t page) {
    FaultResult r;
    while ((r = mmu.fault(v, BenchRig::kGuest + page * kPage, Access::Write)) == FaultResult::Retry) {
    }
    if (r == FaultResult::Installed) return {};
    return std::string("fault of page ") + std::to_string(page) + ": " + to_string(r);
}

// The time each vCPU thread started its first fault and finished its last,
// in its own cache line.
struct alignas(64) Span {
    Clock::time_point first, last;
};

// `vcpus` threads, released together, make `pages` faults each (see
// bench_fault.hpp for the layouts). What is timed is the faulting phase:
// from the first fault any vCPU starts to the last fault any vCPU
// finishes, read by the vCPU threads themselves. Thread creation and the
// release (waking up to 1024 threads) are outside it, and with `pages`
// (512 by default: one whole leaf table) faults per vCPU the switches
// between vCPU threads that share a core -- part of running 1024 vCPUs on 2
// cores -- are a small part of it, so total faults / phase is the MMU's
// throughput at this vCPU count. No thread exits inside the phase: each
// waits for the others after its last fault, since an exiting thread's stack
// is unmapped, which costs a TLB shootdown to the other core while vCPUs
// still fault there.
FaultSample fault_once(std::uint32_t vcpus, std::uint64_t pages, Sharing sharing, LockPolicy lock, CoherencePolicy coh) {
    const std::uint64_t region = region_pages(vcpus, pages, sharing);
    const std::uint64_t stride = round_to_table(pages);
    // Frames for the pages faulted, not the whole region (1024 vCPUs of 16
    // pages span 2 GiB of address space but need 16 Ki pages).
    const std::uint64_t data_pages = sharing == Sharing::Disjoint ? std::uint64_t{vcpus} * pages : pages;
    BenchRig rig(region, false, BenchRig::frames_for(data_pages, vcpus));
    ShadowMmu& mmu = rig.add_shadow({lock, coh, 512, vcpus}, nullptr, region);

    std::latch ready(vcpus + 1);
    std::latch go(1);
    std::latch finished(vcpus);
    std::vector<std::string> errors(vcpus);
    std::vector<Span> spans(vcpus);
    std::vector<std::thread> threads;
    threads.reserve(vcpus);
    for (std::uint32_t v = 0; v < vcpus; ++v) {
        threads.emplace_back([&, v] {
            ready.count_down();
            go.wait();
            // Shared: all vCPUs fault pages 0..pages-1, vCPU v from page
            // v * pages / vcpus on, wrapping around.
            const std::uint64_t offset = sharing == Sharing::Shared ? std::uint64_t{v} * pages / vcpus : 0;
            const std::uint64_t base = sharing == Sharing::Disjoint ? std::uint64_t{v} * stride : 0;
            spans[v].first = Clock::now();
            for (std::uint64_t i = 0; i < pages; ++i) {
                const std::uint64_t page = base + (i + offset) % pages;
                if (std::string e = fault_installed(mmu, v, page); !e.empty()) {
                    errors[v] = std::move(e);
                    break;
                }
            }
            spans[v].last = Clock::now();
            finished.arrive_and_wait();
        });
    }
    ready.arrive_and_wait();
    go.count_down();
    for (auto& t : threads) t.join();
    for (const auto& e : errors)
        if (!e.empty()) throw std::runtime_error("bench fault: " + e);
    Clock::time_point first = spans[0].first, last = spans[0].last;
    for (const Span& s : spans) {
        first = std::min(first, s.first);
        last = std::max(last, s.last);
    }
    return {std::chrono::duration<double>(last - first).count(), mmu.fault_counters()};
}

struct WarmSample {
    double ns = 0; // median over batches of the batch's mean ns per fault
    ShadowCounters c; // the timed pass only
};

// One vCPU installs `pages` pages whose host pages are present and whose
// shadow leaf tables exist: the pages are faulted once (host and shadow),
// the shadow entries zapped (the host pages and the tables stay), and then
// faulted again, timed per batch of kWarmBatch faults.
WarmSample warm_once(std::uint64_t pages, LockPolicy lock, CoherencePolicy coh) {
    const std::uint64_t region = round_to_table(pages);
    BenchRig rig(region, false, BenchRig::frames_for(pages, 1));
    ShadowMmu& mmu = rig.add_shadow({lock, coh, 512, 1}, nullptr, region);
    for (std::uint64_t p = 0; p < pages; ++p)
        if (std::string e = fault_installed(mmu, 0, p); !e.empty()) throw std::runtime_error("bench fault: warm: " + e);
    mmu.zap_guest_range(BenchRig::kGuest, BenchRig::kGuest + region * kPage);

    const ShadowCounters before = mmu.fault_counters();
    std::vector<double> batch_ns;
    batch_ns.reserve(pages / kWarmBatch + 1);
    auto t0 = Clock::now();
    for (std::uint64_t p = 0; p < pages;) {
        const std::uint64_t end = std::min(pages, p + kWarmBatch);
        const std::uint64_t n = end - p;
        for (; p < end; ++p)
            if (std::string e = fault_installed(mmu, 0, p); !e.empty())
                throw std::runtime_error("bench fault: warm: " + e);
        const auto t1 = Clock::now();
        batch_ns.push_back(std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(n));
        t0 = t1;
    }
    return {summarize(batch_ns).median, mmu.fault_counters().since(before)};
}

double per(std::uint64_t n, std::uint64_t d) { return d ? static_cast<double>(n) / static_cast<double>(d) : 0; }

std::vector<Column> fault_columns() {
    return {{"engine"},
            {"lock"},
            {"coherence"},
            {"sharing"},
            {"vcpus"},
            {"faults"},
            {"faults_per_s"},
            {"fps_min"},
            {"fps_max"},
            {"ns_per_fault", 1},
            {"retries_per_fault", 3},
            {"locks_per_fault", 2},
            {"shared_atomics_per_fault", 3},
            {"host_locks_per_fault", 2},
            {"host_shared_atomics_per_fault", 3}};
}

std::vector<Cell> shadow_row(LockPolicy lock, CoherencePolicy coh, const char* sharing, std::uint32_t vcpus,
                             const ShadowCounters& c, const Summary& fps, double ns) {
    return {std::string("shadow"),
            std::string(to_string(lock)),
            std::string(to_string(coh)),
            std::string(sharing),
            std::uint64_t{vcpus},
            c.faults,
            fps.median,
            fps.min,
            fps.max,
            ns,
            per(c.retries, c.faults),
            per(c.lock_acquisitions, c.faults),
            per(c.shared_atomics, c.faults),
            per(c.host_lock_acquisitions, c.faults),
            per(c.host_shared_atomics, c.faults)};
}

} // namespace

FaultBenchConfig quick_fault_config() {
    FaultBenchConfig c;
    c.vcpus = {1, 2, 64, 1024};
    c.pages = 16;
    c.repeat = 1;
    return c;
}

BenchReport run_fault_bench(const FaultBenchConfig& config) {
    if (config.repeat == 0) throw std::invalid_argument("bench fault: --repeat must be at least 1, got 0");
    if (config.pages == 0) throw std::invalid_argument("bench fault: pages per vCPU must be at least 1, got 0");
    for (const std::uint32_t v : config.vcpus) {
        if (v == 0 || v > kMaxVcpus)
            throw std::invalid_argument("bench fault: vCPU counts must be 1..1024, got " + std::to_string(v));
        if (config.pages > kMaxFaultRegionPages / v || region_pages(v, config.pages, Sharing::Disjoint) > kMaxFaultRegionPages)
            throw std::invalid_argument("bench fault: " + std::to_string(v) + " vCPUs x " +
                                        std::to_string(config.pages) +
                                        " pages (each vCPU's rounded up to 2 MiB) exceed 4 GiB");
    }

    BenchReport report("fault", fault_columns());
    report.set_meta("what", "first faults of fresh 4 KiB pages, `pages` per vCPU (disjoint: each vCPU's from its own "
                            "2 MiB boundary); faults per second over the faulting phase, median over repeats; warm: "
                            "1 vCPU installing pages whose host page is present, ns_per_fault = median over batches "
                            "of " + std::to_string(kWarmBatch) + " faults of the batch mean, median over repeats");
    report.set_meta("pages_per_vcpu", std::to_string(config.pages));
    report.set_meta("repeat", std::to_string(config.repeat));
    report.set_meta("cores", std::to_string(std::thread::hardware_concurrency()));

    const std::size_t policies = config.locks.size() * config.coherences.size();
    const std::size_t per_count = 2 * policies + (config.linux_baseline ? 3 : 0);
    const std::size_t total = policies + config.vcpus.size() * per_count;
    std::size_t done = 0;
    auto note = [&](const std::string& what) {
        if (config.progress) config.progress(done, total, what);
    };

    // Warm single-vCPU installs (T1).
    for (const LockPolicy lock : config.locks) {
        for (const CoherencePolicy coh : config.coherences) {
            note(std::string("warm ") + to_string(lock) + " " + to_string(coh));
            std::vector<double> ns;
            WarmSample last;
            for (unsigned r = 0; r < config.repeat; ++r) {
                last = warm_once(config.pages, lock, coh);
                ns.push_back(last.ns);
            }
            const Summary s = summarize(ns);
            const Summary fps{1e9 / s.median, 1e9 / s.max, 1e9 / s.min};
            report.add_row(shadow_row(lock, coh, "warm", 1, last.c, fps, s.median));
            ++done;
        }
    }

    for (const std::uint32_t vcpus : config.vcpus) {
        for (const Sharing sharing : {Sharing::Disjoint, Sharing::Shared}) {
            for (const LockPolicy lock : config.locks) {
                for (const CoherencePolicy coh : config.coherences) {
                    note(std::string("shadow ") + to_string(lock) + " " + to_string(coh) + " " + std::to_string(vcpus));
                    std::vector<double> fps;
                    FaultSample last;
                    for (unsigned r = 0; r < config.repeat; ++r) {
                        last = fault_once(vcpus, config.pages, sharing, lock, coh);
                        fps.push_back(static_cast<double>(last.c.faults) / last.seconds);
                    }
                    const Summary s = summarize(fps);
                    report.add_row(shadow_row(lock, coh, to_string(sharing), vcpus, last.c, s, 1e9 / s.median));
                    ++done;
                }
            }
        }
        if (!config.linux_baseline) continue;
        struct Linux {
            const char* engine;
            Sharing sharing;
            std::function<LinuxResult()> run;
        };
        // The same pages per thread as the vCPUs: disjoint, thread t touches
        // its own `pages` pages (from a 2 MiB boundary when pages is a
        // multiple of 512); shared, every thread touches the same `pages`.
        const std::uint64_t all = config.pages * vcpus;
        const Linux baselines[] = {
            {"linux", Sharing::Disjoint, [&] { return linux_first_touch(all, vcpus, Sharing::Disjoint); }},
            {"linux", Sharing::Shared, [&] { return linux_first_touch(config.pages, vcpus, Sharing::Shared); }},
            {"uffd", Sharing::Disjoint, [&] { return uffd_copy_faults(all, vcpus); }},
        };
        for (const Linux& b : baselines) {
            note(std::string(b.engine) + " " + to_string(b.sharing) + " " + std::to_string(vcpus));
            std::vector<double> fps;
            LinuxResult last;
            // Shared: every thread touches each of the `pages` pages once,
            // so the touches (the shadow rows' fault calls) are pages x vCPUs.
            const std::uint64_t touches_per_page = b.sharing == Sharing::Shared ? vcpus : 1;
            for (unsigned r = 0; r < config.repeat; ++r) {
                last = b.run();
                if (!last.available) break;
                fps.push_back(last.pages_per_second() * static_cast<double>(touches_per_page));
            }
            ++done;
            if (!last.available) {
                report.set_meta(std::string(b.engine) + "_unavailable", last.unavailable_reason);
                continue;
            }
            const Summary s = summarize(fps);
            report.add_row({std::string(b.engine), std::string("-"), std::string("-"), std::string(to_string(b.sharing)),
                            std::uint64_t{vcpus}, last.pages * touches_per_page, s.median, s.min, s.max,
                            1e9 / s.median, 0.0, 0.0, 0.0, 0.0, 0.0});
        }
    }
    note("done");
    return report;
}

} // namespace hv::bench
