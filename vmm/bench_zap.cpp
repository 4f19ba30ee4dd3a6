#include "bench_zap.hpp"

#include "bench_rig.hpp"
#include "linux_baseline.hpp"

#include <chrono>
#include <optional>
#include <stdexcept>

namespace hv::bench {

namespace {

using namespace hv::mmu;
using Clock = std::chrono::steady_clock;

constexpr std::uint64_t kPage = BenchRig::kPage;
constexpr std::uint64_t kHost = BenchRig::kHost;
constexpr std::uint64_t kGuest = BenchRig::kGuest;
constexpr std::uint64_t kMaxSize = kMaxBytes; // 4 GiB, as the Linux rows allow

enum class Shape { Range, Page };

// The vCPU's TLB is not modelled here: a shootdown only counts its targets
// (the flush itself is the guest's cost, measured by `vmm bench kvm`).
struct CountingShootdown final : TlbShootdown {
    std::uint64_t targets = 0;
    void shootdown(const VcpuMask& t, std::span<const std::uint64_t>) override { targets += t.count(); }
};

struct ZapSample {
    double ns = 0;
    ShadowCounters zap; // the zapping thread's counters for this unmap
    std::uint64_t pages = 0;
};

// One populated range, unmapped once. `batch` is unused without a subscriber.
ZapSample zap_once(std::uint64_t bytes, Shape shape, bool shadow, std::size_t batch) {
    const std::uint64_t pages = bytes / kPage;
    CountingShootdown sd; // outlives the rig's MMU
    BenchRig rig(pages, shape == Shape::Page);
    HostAddressSpace& host = rig.host;
    ShadowMmu* mmu = shadow ? &rig.add_shadow({LockPolicy::Rw, CoherencePolicy::Seq, batch, 1}, &sd, pages) : nullptr;
    for (std::uint64_t p = 0; p < pages; ++p) {
        if (mmu) {
            const FaultResult r = mmu->fault(0, kGuest + p * kPage, Access::Write);
            if (r != FaultResult::Installed)
                throw std::runtime_error(std::string("bench zap: populating page ") + std::to_string(p) +
                                         " failed: " + to_string(r));
        } else if (host.fault(kHost + p * kPage, Access::Write).status != HostFaultStatus::Mapped) {
            throw std::runtime_error("bench zap: populating host page " + std::to_string(p) + " failed");
        }
    }
    const ShadowCounters before = mmu ? mmu->zap_counters() : ShadowCounters{};
    const auto t0 = Clock::now();
    const std::size_t unmapped = host.unmap({kHost, kHost + bytes});
    const auto t1 = Clock::now();
    if (unmapped != pages)
        throw std::runtime_error("bench zap: expected to unmap " + std::to_string(pages) + " pages, unmapped " +
                                 std::to_string(unmapped));
    ZapSample s;
    s.ns = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    s.pages = pages;
    if (mmu) {
        const ShadowCounters after = mmu->zap_counters();
        s.zap.zaps = after.zaps - before.zaps;
        s.zap.batches = after.batches - before.batches;
        s.zap.max_batch = after.max_batch;
        s.zap.shootdowns = after.shootdowns - before.shootdowns;
        s.zap.shootdown_targets = after.shootdown_targets - before.shootdown_targets;
        s.zap.lock_acquisitions = after.lock_acquisitions - before.lock_acquisitions;
        s.zap.shared_atomics = after.shared_atomics - before.shared_atomics;
    }
    return s;
}

std::string size_text(std::uint64_t bytes) {
    if (bytes % (std::uint64_t{1} << 30) == 0) return std::to_string(bytes >> 30) + "G";
    return std::to_string(bytes >> 20) + "M";
}

std::string batch_text(std::size_t batch) { return batch ? std::to_string(batch) : std::string("all"); }

double per_page(std::uint64_t n, std::uint64_t pages) { return pages ? static_cast<double>(n) / static_cast<double>(pages) : 0; }

std::vector<Column> zap_columns() {
    return {{"subscriber"},       {"call"},           {"batch"},           {"size"},      {"pages"},
            {"ns_per_page", 2},   {"ns_min", 2},      {"ns_max", 2},       {"holds"},     {"entries_per_hold", 1},
            {"shootdowns"},       {"locks_per_page", 3}, {"shared_atomics_per_page", 3}};
}

} // namespace

ZapBenchConfig quick_zap_config() {
    ZapBenchConfig c;
    c.sizes = {std::uint64_t{2} << 20, std::uint64_t{64} << 20};
    c.repeat = 1;
    return c;
}

BenchReport run_zap_bench(const ZapBenchConfig& config) {
    if (config.repeat == 0) throw std::invalid_argument("bench zap: --repeat must be at least 1, got 0");
    for (const std::uint64_t s : config.sizes)
        if (s == 0 || s % (std::uint64_t{2} << 20) || s > kMaxSize)
            throw std::invalid_argument("bench zap: sizes must be positive multiples of 2 MiB up to 4 GiB, got " +
                                        std::to_string(s) + " bytes");

    BenchReport report("zap", zap_columns());
    report.set_meta("what", "unmap of a populated range of 4 KiB pages; ns per page, median over repeats");
    report.set_meta("repeat", std::to_string(config.repeat));

    // Each configuration: subscriber x call x batch; batch matters only for a
    // range unmap into the shadow MMU.
    struct Config {
        std::string subscriber, call;
        std::size_t batch;
        Shape shape;
        bool shadow;
        std::optional<ZapCall> linux_call;
        std::uint64_t chunk = 0;
    };
    std::vector<Config> configs;
    configs.push_back({"none", "range", 0, Shape::Range, false, {}, 0});
    configs.push_back({"none", "page", 0, Shape::Page, false, {}, 0});
    for (const std::size_t b : config.batches) configs.push_back({"shadow", "range", b, Shape::Range, true, {}, 0});
    configs.push_back({"shadow", "page", 1, Shape::Page, true, {}, 0});
    if (config.linux_baseline) {
        configs.push_back({"linux", "madvise-4k", 0, Shape::Range, false, ZapCall::MadviseDontneed, kPage});
        configs.push_back({"linux", "madvise-2m", 0, Shape::Range, false, ZapCall::MadviseDontneed, kHugeBytes});
        configs.push_back({"linux", "munmap-4k", 0, Shape::Range, false, ZapCall::Munmap, kPage});
        configs.push_back({"linux", "munmap-2m", 0, Shape::Range, false, ZapCall::Munmap, kHugeBytes});
    }

    const std::size_t total = config.sizes.size() * configs.size();
    std::size_t done = 0;
    for (const std::uint64_t size : config.sizes) {
        for (const Config& c : configs) {
            const std::string label = c.subscriber + " " + c.call + " batch " + batch_text(c.batch) + " " + size_text(size);
            if (config.progress) config.progress(done, total, label);
            std::vector<double> ns_per_page;
            ZapSample last;
            std::uint64_t calls = 0;
            for (unsigned r = 0; r < config.repeat; ++r) {
                if (c.linux_call) {
                    const LinuxResult l = linux_zap(size, c.chunk, *c.linux_call);
                    if (!l.available) throw std::runtime_error("bench zap: " + l.unavailable_reason);
                    ns_per_page.push_back(l.ns_per_page());
                    last.pages = l.pages;
                    calls = l.calls;
                } else {
                    last = zap_once(size, c.shape, c.shadow, c.batch);
                    ns_per_page.push_back(last.ns / static_cast<double>(last.pages));
                }
            }
            const Summary s = summarize(ns_per_page);
            const bool counted = c.shadow;
            const std::uint64_t holds = c.linux_call ? calls : last.zap.batches;
            report.add_row({c.subscriber, c.call, c.shadow && c.shape == Shape::Range ? batch_text(c.batch) : "-",
                            size_text(size), last.pages, s.median, s.min, s.max, holds,
                            counted ? per_page(last.zap.zaps, last.zap.batches) : 0.0,
                            counted ? last.zap.shootdowns : std::uint64_t{0},
                            counted ? per_page(last.zap.lock_acquisitions, last.pages) : 0.0,
                            counted ? per_page(last.zap.shared_atomics, last.pages) : 0.0});
            ++done;
        }
    }
    if (config.progress) config.progress(done, total, "done");
    return report;
}

} // namespace hv::bench
