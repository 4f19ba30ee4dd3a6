#include "bench_fault.hpp"

#include "bench_rig.hpp"
#include "linux_baseline.hpp"

#include <chrono>
#include <latch>
#include <stdexcept>
#include <thread>

namespace hv::bench {

namespace {

using namespace hv::mmu;
using Clock = std::chrono::steady_clock;

constexpr std::uint32_t kMaxVcpus = 1024;

struct FaultSample {
    double seconds = 0;
    ShadowCounters c; // the vCPUs' fault counters summed
};

// `pages` fresh pages, faulted by `vcpus` threads released together. A
// Retry is faulted again (the caller of fault() must); every other result
// but Installed is an error of the experiment.
FaultSample fault_once(std::uint32_t vcpus, std::uint64_t pages, Sharing sharing, LockPolicy lock, CoherencePolicy coh) {
    BenchRig rig(pages, false);
    ShadowMmu& mmu = rig.add_shadow({lock, coh, 512, vcpus}, nullptr, pages);

    std::latch ready(vcpus + 1);
    std::latch go(1);
    std::vector<std::string> errors(vcpus);
    std::vector<std::thread> threads;
    threads.reserve(vcpus);
    // Every vCPU makes `per` faults: disjoint, on its own pages; shared, on
    // the same `per` pages as every other vCPU, starting at its own offset
    // so that the first touches are spread over the pages.
    const std::uint64_t per = pages / vcpus;
    for (std::uint32_t v = 0; v < vcpus; ++v) {
        threads.emplace_back([&, v] {
            ready.count_down();
            go.wait();
            for (std::uint64_t i = 0; i < per; ++i) {
                const std::uint64_t page = sharing == Sharing::Shared ? (i + std::uint64_t{v} * per / vcpus) % per
                                                                      : std::uint64_t{v} * per + i;
                FaultResult r;
                while ((r = mmu.fault(v, BenchRig::kGuest + page * BenchRig::kPage, Access::Write)) == FaultResult::Retry) {
                }
                if (r != FaultResult::Installed) {
                    errors[v] = std::string("fault of page ") + std::to_string(page) + ": " + to_string(r);
                    return;
                }
            }
        });
    }
    ready.arrive_and_wait();
    const auto t0 = Clock::now();
    go.count_down();
    for (auto& t : threads) t.join();
    const auto t1 = Clock::now();
    for (const auto& e : errors)
        if (!e.empty()) throw std::runtime_error("bench fault: " + e);
    return {std::chrono::duration<double>(t1 - t0).count(), mmu.fault_counters()};
}

double per(std::uint64_t n, std::uint64_t d) { return d ? static_cast<double>(n) / static_cast<double>(d) : 0; }

std::vector<Column> fault_columns() {
    return {{"engine"},         {"lock"},          {"coherence"},       {"sharing"},           {"vcpus"},
            {"faults"},         {"faults_per_s"},  {"fps_min"},         {"fps_max"},           {"retries_per_fault", 3},
            {"locks_per_fault", 2}, {"shared_atomics_per_fault", 3}};
}

} // namespace

FaultBenchConfig quick_fault_config() {
    FaultBenchConfig c;
    c.vcpus = {1, 2, 64, 1024};
    c.pages = 4096;
    c.repeat = 1;
    return c;
}

BenchReport run_fault_bench(const FaultBenchConfig& config) {
    if (config.repeat == 0) throw std::invalid_argument("bench fault: --repeat must be at least 1, got 0");
    for (const std::uint32_t v : config.vcpus)
        if (v == 0 || v > kMaxVcpus || v > config.pages)
            throw std::invalid_argument("bench fault: vCPU counts must be 1..1024 and at most the pages (" +
                                        std::to_string(config.pages) + "), got " + std::to_string(v));

    BenchReport report("fault", fault_columns());
    report.set_meta("what", "first faults of fresh 4 KiB pages; faults per second, median over repeats");
    report.set_meta("pages", std::to_string(config.pages));
    report.set_meta("repeat", std::to_string(config.repeat));
    report.set_meta("cores", std::to_string(std::thread::hardware_concurrency()));

    const std::size_t per_count = 2 * config.locks.size() * config.coherences.size() + (config.linux_baseline ? 3 : 0);
    const std::size_t total = config.vcpus.size() * per_count;
    std::size_t done = 0;
    auto note = [&](const std::string& what) {
        if (config.progress) config.progress(done, total, what);
    };
    for (const std::uint32_t vcpus : config.vcpus) {
        const std::uint64_t disjoint_pages = config.pages / vcpus * vcpus;
        for (const Sharing sharing : {Sharing::Disjoint, Sharing::Shared}) {
            for (const LockPolicy lock : config.locks) {
                for (const CoherencePolicy coh : config.coherences) {
                    note(std::string("shadow ") + to_string(lock) + " " + to_string(coh) + " " + std::to_string(vcpus));
                    std::vector<double> fps;
                    FaultSample last;
                    for (unsigned r = 0; r < config.repeat; ++r) {
                        last = fault_once(vcpus, disjoint_pages, sharing, lock, coh);
                        fps.push_back(static_cast<double>(last.c.faults) / last.seconds);
                    }
                    const Summary s = summarize(fps);
                    report.add_row({std::string("shadow"), std::string(to_string(lock)), std::string(to_string(coh)),
                                    std::string(to_string(sharing)), std::uint64_t{vcpus}, last.c.faults,
                                    s.median, s.min, s.max, per(last.c.retries, last.c.faults),
                                    per(last.c.lock_acquisitions, last.c.faults),
                                    per(last.c.shared_atomics, last.c.faults)});
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
        const Linux baselines[] = {
            {"linux", Sharing::Disjoint, [&] { return linux_first_touch(disjoint_pages, vcpus, Sharing::Disjoint); }},
            {"linux", Sharing::Shared, [&] { return linux_first_touch(disjoint_pages / vcpus, vcpus, Sharing::Shared); }},
            {"uffd", Sharing::Disjoint, [&] { return uffd_copy_faults(disjoint_pages, vcpus); }},
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
                            std::uint64_t{vcpus}, last.pages * touches_per_page, s.median, s.min, s.max, 0.0, 0.0, 0.0});
        }
    }
    note("done");
    return report;
}

} // namespace hv::bench
