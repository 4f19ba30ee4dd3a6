#include "vmm/bench/bench_mixed.hpp"

#include "mmu/base/units.hpp"
#include "vmm/bench/bench_mixed_measure.hpp"

#include <algorithm>
#include <cmath>
#include <optional>
#include <stdexcept>
#include <thread>

namespace hv::bench {

namespace {

using namespace hv::mmu;
constexpr std::uint64_t kTablePages = 512; // 2 MiB
constexpr std::uint64_t kMaxSize = std::uint64_t{4} << 30;
constexpr std::uint32_t kMaxFaultThreads = 64;

struct Percentiles {
    double p50 = 0, p99 = 0, max = 0;
};

// Nearest rank: the smallest sample with at least q of the samples at or
// below it.
Percentiles percentiles(std::vector<std::uint64_t> ns) {
    std::sort(ns.begin(), ns.end());
    const auto rank = [&](double q) {
        const auto i = static_cast<std::size_t>(std::ceil(q * static_cast<double>(ns.size())));
        return static_cast<double>(ns[std::max<std::size_t>(i, 1) - 1]);
    };
    return {rank(0.50), rank(0.99), static_cast<double>(ns.back())};
}

// One row's repeats: percentiles per repeat (a repeat with no fault
// during a zap has none), counts summed.
struct Tally {
    std::vector<double> p50, p99, max, zap_ns_per_page;
    std::uint64_t faults = 0, retries = 0, locks = 0, zaps = 0, zapped = 0, holds = 0, zap_locks = 0;
    std::uint64_t zaps_preempted = 0, faults_preempted = 0;

    void add(const MixedMeasurement& m) {
        if (!m.ns.empty()) {
            const Percentiles p = percentiles(m.ns);
            p50.push_back(p.p50);
            p99.push_back(p.p99);
            max.push_back(p.max);
        }
        if (m.zapped) zap_ns_per_page.push_back(static_cast<double>(m.window_ns) / static_cast<double>(m.zapped));
        faults += m.ns.size();
        retries += m.retries;
        locks += m.locks;
        zaps += m.zaps;
        zapped += m.zapped;
        holds += m.holds;
        zap_locks += m.zap_locks;
        zaps_preempted += m.zaps_preempted;
        faults_preempted += m.faults_preempted;
    }
};

double median_or_zero(const std::vector<double>& v) { return v.empty() ? 0 : summarize(v).median; }
double per(std::uint64_t n, std::uint64_t d) { return d ? static_cast<double>(n) / static_cast<double>(d) : 0; }
std::string batch_text(std::size_t batch) { return batch ? std::to_string(batch) : std::string("all"); }

std::vector<Column> mixed_columns() {
    return {{"lock"},           {"coherence"},          {"zap_batch"},          {"zap_pages"},
            {"faults"},         {"fault_p50_ns"},       {"fault_p99_ns"},       {"fault_max_ns"},
            {"p99_vs_idle", 2}, {"zaps"},               {"zap_ns_per_page", 2}, {"zap_entries_per_hold", 1},
            {"locks_per_zap_page", 3},                  {"fault_retries_per_fault", 3},
            {"locks_per_fault", 2},                     {"zaps_preempted"},     {"faults_preempted"}};
}

void validate(const MixedBenchConfig& c) {
    const auto refuse = [](const std::string& what) { throw std::invalid_argument("bench mixed: " + what); };
    if (c.size == 0 || c.size % (kTablePages * kPage) || c.size > kMaxSize)
        refuse("the size must be a positive multiple of 2 MiB up to 4 GiB, got " + std::to_string(c.size) + " bytes");
    if (c.fault_threads == 0 || c.fault_threads > kMaxFaultThreads)
        refuse("fault threads must be 1..64, got " + std::to_string(c.fault_threads));
    if (c.batches.empty()) refuse("expected at least one zap batch size, got none");
    if (c.locks.empty()) refuse("expected at least one lock policy, got none");
    if (c.coherences.empty()) refuse("expected at least one coherence policy, got none");
    if (c.repeat == 0) refuse("--repeat must be at least 1, got 0");
    if (c.samples == 0) refuse("samples must be at least 1, got 0");
    if (c.min_zaps == 0) refuse("min_zaps must be at least 1, got 0");
}

} // namespace

MixedBenchConfig quick_mixed_config() {
    MixedBenchConfig c;
    c.size = std::uint64_t{64} << 20;
    c.batches = {1, 512, 0};
    c.locks = {LockPolicy::Rw, LockPolicy::Global};
    c.repeat = 1;
    c.samples = 5000;
    return c;
}

BenchReport run_mixed_bench(const MixedBenchConfig& config) {
    validate(config);
    const std::uint64_t zap_pages = config.size / kPage;
    BenchReport report("mixed", mixed_columns());
    report.set_meta("what", "latency of fresh 4 KiB page faults while another thread zaps a populated range, per "
                            "zap batch; nearest-rank percentiles, median over repeats");
    report.set_meta("during_zaps", "a fault counts when its call overlaps a zap: from the start of the host unmap "
                                   "until the shadow MMU has zapped the range; idle rows count every fault");
    report.set_meta("preempted", "zaps_preempted: zaps during which the zapping thread was preempted (faults then "
                                 "ran while the zap did not); faults_preempted: counted faults in a stretch of up "
                                 "to 256 faults during which their thread was preempted. Nonzero: the cores were "
                                 "shared (other load, or more threads than cores), and the times say less");
    report.set_meta("counts", "faults, zaps and the preempted counts are totals over the repeats; the ratios per "
                              "fault, per hold and per page are over those totals");
    report.set_meta("size", std::to_string(config.size));
    report.set_meta("fault_threads", std::to_string(config.fault_threads));
    report.set_meta("samples", std::to_string(config.samples));
    report.set_meta("repeat", std::to_string(config.repeat));
    report.set_meta("cores", std::to_string(std::thread::hardware_concurrency()));

    // The idle row and one per batch; repeats interleave them, so that a
    // change in the machine's load meanwhile spreads over all of them.
    std::vector<std::optional<std::size_t>> settings{std::nullopt};
    for (const std::size_t b : config.batches) settings.emplace_back(b);
    const std::size_t total = config.locks.size() * config.coherences.size() * settings.size() * config.repeat;
    std::size_t done = 0;
    for (const LockPolicy lock : config.locks) {
        for (const CoherencePolicy coh : config.coherences) {
            std::vector<Tally> tallies(settings.size());
            for (unsigned r = 0; r < config.repeat; ++r) {
                for (std::size_t i = 0; i < settings.size(); ++i) {
                    if (config.progress)
                        config.progress(done, total,
                                        std::string(to_string(lock)) + " " + to_string(coh) + " " +
                                            (settings[i] ? "batch " + batch_text(*settings[i]) : "idle") +
                                            ", repeat " + std::to_string(r + 1));
                    tallies[i].add(measure_mixed(config, lock, coh, settings[i]));
                    ++done;
                }
            }
            const double idle_p99 = median_or_zero(tallies[0].p99);
            for (std::size_t i = 0; i < settings.size(); ++i) {
                const Tally& t = tallies[i];
                const double p99 = median_or_zero(t.p99);
                report.add_row({std::string(to_string(lock)), std::string(to_string(coh)),
                                settings[i] ? batch_text(*settings[i]) : std::string("idle"),
                                settings[i] ? zap_pages : std::uint64_t{0}, t.faults, median_or_zero(t.p50), p99,
                                median_or_zero(t.max), settings[i] ? (idle_p99 > 0 ? p99 / idle_p99 : 0.0) : 1.0,
                                t.zaps, median_or_zero(t.zap_ns_per_page), per(t.zapped, t.holds),
                                per(t.zap_locks, t.zapped), per(t.retries, t.faults), per(t.locks, t.faults),
                                t.zaps_preempted, t.faults_preempted});
            }
        }
    }
    if (config.progress) config.progress(done, total, "done");
    return report;
}

} // namespace hv::bench
