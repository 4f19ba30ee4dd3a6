#include "vmm/bench/bench_zap.hpp"

#include "mmu/base/units.hpp"
#include "mmu/secondary/external_tlb.hpp"
#include "vmm/bench/bench_rig.hpp"
#include "vmm/bench/linux_baseline.hpp"

#include <chrono>
#include <limits>
#include <memory>
#include <optional>
#include <stdexcept>

namespace hv::bench {

namespace {

using namespace hv::mmu;
using Clock = std::chrono::steady_clock;
constexpr std::uint64_t kHost = BenchRig::kHost;
constexpr std::uint64_t kGuest = BenchRig::kGuest;
constexpr std::uint64_t kMaxSize = kMaxBytes; // 4 GiB, as the Linux rows allow

// How the host drops the range: one invalidate_range_start/end pair
// (munmap), invalidate_page per page (the 2008 shape), or one
// invalidate_range_start/end pair making it read-only and one making it
// writable again (mprotect there and back, as linux_mprotect does); or, with
// no host call at all, the shadow MMU dropping the guest range by itself
// (ShadowMmu::zap_guest_range, as for a memslot deletion): the zap's own
// cost with nothing of the host's around it.
enum class Shape { Range, Page, Protect, Guest };
// Who subscribes to the host's notifier chain.
enum class Subscriber { None, Shadow, ExternalTlb };

// The vCPU's TLB is not modelled here: a shootdown only counts its targets
// (the flush itself is the guest's cost, measured by `vmm bench kvm`).
struct CountingShootdown final : TlbShootdown {
    std::uint64_t targets = 0;
    void shootdown(const VcpuMask& t, std::span<const std::uint64_t>) override { targets += t.count(); }
};

// What one unmap (or protect) cost the subscriber, in the shadow MMU's terms:
// entries dropped, lock holds (the external TLB: flush calls, each one write
// to the device), shootdowns, locks and shared-line atomics.
struct ZapSample {
    double ns = 0;
    ShadowCounters zap;
    std::uint64_t pages = 0; // pages per host call (Protect makes two calls over them)
};

// The external TLB's invalidation counters in the columns' terms.
ShadowCounters as_zap(const ExternalTlbCounters& c) {
    ShadowCounters z;
    z.zaps = c.entries_dropped;
    z.batches = c.range_flushes + c.page_flushes;
    z.lock_acquisitions = c.flush_locks;
    z.shared_atomics = c.shared_atomics;
    return z;
}

// One populated range, unmapped (or protected) once. `batch` is the shadow
// MMU's only.
ZapSample zap_once(std::uint64_t bytes, Shape shape, Subscriber sub, std::size_t batch, LockPolicy lock) {
    const std::uint64_t pages = bytes / kPage;
    CountingShootdown sd; // outlives the rig's MMU
    BenchRig rig(pages, shape == Shape::Page);
    HostAddressSpace& host = rig.host;
    ShadowMmu* mmu = sub == Subscriber::Shadow
                         ? &rig.add_shadow({lock, CoherencePolicy::Seq, batch, 1}, &sd, pages)
                         : nullptr;
    // One vCPU whose TLB holds the whole range (4-way: pages is a multiple
    // of 512), so every page has an entry to flush. Destroyed before the rig.
    std::unique_ptr<ExternalTlb> tlb = sub == Subscriber::ExternalTlb ? std::make_unique<ExternalTlb>(host, 1, pages)
                                                                       : nullptr;
    for (std::uint64_t p = 0; p < pages; ++p) {
        bool ok;
        if (mmu) {
            ok = mmu->fault(0, kGuest + p * kPage, Access::Write) == FaultResult::Installed;
        } else if (tlb) {
            ok = tlb->translate(0, kHost + p * kPage, Access::Write).status == TlbStatus::Refilled;
        } else {
            ok = host.fault(kHost + p * kPage, Access::Write).status == HostFaultStatus::Mapped;
        }
        if (!ok) throw std::runtime_error("bench zap: populating page " + std::to_string(p) + " failed");
    }
    if (tlb && tlb->valid_entries(0) != pages)
        throw std::runtime_error("bench zap: the external TLB holds " + std::to_string(tlb->valid_entries(0)) +
                                 " entries after populating " + std::to_string(pages) + " pages");
    const ShadowCounters before = mmu ? mmu->zap_counters() : tlb ? as_zap(tlb->counters()) : ShadowCounters{};
    const HostRange range{kHost, kHost + bytes};
    const auto t0 = Clock::now();
    std::size_t changed;
    if (shape == Shape::Protect) {
        changed = host.protect(range, false);
        host.protect(range, true);
    } else if (shape == Shape::Guest) {
        changed = mmu->zap_guest_range(kGuest, kGuest + bytes);
    } else {
        changed = host.unmap(range);
    }
    const auto t1 = Clock::now();
    if (changed != pages)
        throw std::runtime_error("bench zap: expected to change " + std::to_string(pages) + " pages, changed " +
                                 std::to_string(changed));
    ZapSample s;
    s.ns = static_cast<double>(std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count());
    s.pages = pages;
    if (mmu) s.zap = mmu->zap_counters().since(before);
    if (tlb) s.zap = as_zap(tlb->counters()).since(before);
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
            {"ns_per_page", 2},   {"ns_min", 2},      {"ns_max", 2},       {"own_ns_per_page", 2},
            {"holds"},            {"entries_per_hold", 1},                 {"shootdowns"},
            {"locks_per_page", 3}, {"shared_atomics_per_page", 3}};
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
    report.set_meta("what", "unmap (call range, page) or mprotect there and back (call protect) of a populated "
                            "range of 4 KiB pages; ns per page per host call, median over repeats; own_ns_per_page: "
                            "the subscriber's share (minus the no-subscriber row of the same call, paired per repeat)");
    report.set_meta("repeat", std::to_string(config.repeat));

    // Each configuration: subscriber x call x batch; batch matters only for
    // the shadow MMU's range invalidations.
    enum class Linux { None, Zap, Mprotect };
    struct Config {
        std::string subscriber, call;
        std::size_t batch;
        Shape shape;
        Subscriber sub;
        Linux linux = Linux::None;
        ZapCall linux_call = ZapCall::Munmap;
        std::uint64_t chunk = 0; // bytes per Linux call; 0: the whole range
        LockPolicy lock = LockPolicy::Rw; // the shadow MMU's
    };
    std::vector<Config> configs;
    const auto host_row = [&](const char* call, Shape shape) {
        configs.push_back({"none", call, 0, shape, Subscriber::None});
    };
    host_row("range", Shape::Range);
    host_row("page", Shape::Page);
    host_row("protect", Shape::Protect);
    for (const std::size_t b : config.batches)
        configs.push_back({"shadow", "range", b, Shape::Range, Subscriber::Shadow});
    configs.push_back({"shadow", "page", 1, Shape::Page, Subscriber::Shadow});
    configs.push_back({"shadow", "protect", 512, Shape::Protect, Subscriber::Shadow});
    for (const std::size_t b : config.batches)
        configs.push_back({"shadow", "guest", b, Shape::Guest, Subscriber::Shadow});
    configs.push_back({"external-tlb", "range", 0, Shape::Range, Subscriber::ExternalTlb});
    configs.push_back({"external-tlb", "page", 0, Shape::Page, Subscriber::ExternalTlb});
    // The 2008 baseline: KVM's one mmu_lock (the global policy) taken once
    // per invalidate_page, one entry per hold.
    configs.push_back({"shadow-global", "page", 1, Shape::Page, Subscriber::Shadow, Linux::None, ZapCall::Munmap, 0,
                       LockPolicy::Global});
    if (config.linux_baseline) {
        const auto linux_row = [&](const char* call, ZapCall zc, std::uint64_t chunk) {
            configs.push_back({"linux", call, 0, Shape::Range, Subscriber::None, Linux::Zap, zc, chunk});
        };
        linux_row("madvise-4k", ZapCall::MadviseDontneed, kPage);
        linux_row("madvise-2m", ZapCall::MadviseDontneed, kHugeBytes);
        linux_row("munmap-4k", ZapCall::Munmap, kPage);
        linux_row("munmap-2m", ZapCall::Munmap, kHugeBytes);
        configs.push_back({"linux", "mprotect", 0, Shape::Protect, Subscriber::None, Linux::Mprotect});
    }
    // The no-subscriber row of each shape, for the subscribers' own share.
    const auto none_row = [](Shape shape) -> std::size_t { return static_cast<std::size_t>(shape); };

    // Repeats are interleaved (every configuration once, then again), so a
    // slow spell of this shared machine hits all configurations alike, and
    // each subscriber's sample is paired with the `none` sample of the same
    // call and repeat: own_ns_per_page, the median of those differences, is
    // the secondary MMU's own cost per page (the zap of its entries and
    // their rmap links, the shootdowns; the external TLB's flushes), the
    // host's work subtracted.
    const std::size_t total = config.sizes.size() * config.repeat * configs.size();
    std::size_t done = 0;
    for (const std::uint64_t size : config.sizes) {
        std::vector<std::vector<double>> ns_per_page(configs.size());
        std::vector<ZapSample> last(configs.size());
        std::vector<std::uint64_t> calls(configs.size(), 0);
        for (unsigned r = 0; r < config.repeat; ++r) {
            for (std::size_t k = 0; k < configs.size(); ++k) {
                const Config& c = configs[k];
                if (config.progress)
                    config.progress(done, total,
                                    c.subscriber + " " + c.call + " batch " + batch_text(c.batch) + " " + size_text(size));
                if (c.linux != Linux::None) {
                    const LinuxResult l = c.linux == Linux::Zap ? linux_zap(size, c.chunk, c.linux_call)
                                                                : linux_mprotect(size, size);
                    if (!l.available) throw std::runtime_error("bench zap: " + l.unavailable_reason);
                    ns_per_page[k].push_back(l.ns_per_page());
                    last[k].pages = size / kPage;
                    calls[k] = l.calls;
                } else {
                    last[k] = zap_once(size, c.shape, c.sub, c.batch, c.lock);
                    const double host_calls = c.shape == Shape::Protect ? 2.0 : 1.0;
                    ns_per_page[k].push_back(last[k].ns / static_cast<double>(last[k].pages) / host_calls);
                }
                ++done;
            }
        }
        for (std::size_t k = 0; k < configs.size(); ++k) {
            const Config& c = configs[k];
            const Summary s = summarize(ns_per_page[k]);
            const bool counted = c.sub != Subscriber::None;
            double own = std::numeric_limits<double>::quiet_NaN();
            if (c.shape == Shape::Guest) {
                own = s.median; // no host work to subtract
            } else if (counted) {
                const std::vector<double>& none = ns_per_page[none_row(c.shape)];
                std::vector<double> diff;
                for (unsigned r = 0; r < config.repeat; ++r) diff.push_back(ns_per_page[k][r] - none[r]);
                own = summarize(diff).median;
            }
            const ZapSample& z = last[k];
            const std::uint64_t holds = c.linux != Linux::None ? calls[k] : z.zap.batches;
            const bool batched = c.sub == Subscriber::Shadow && c.shape != Shape::Page;
            report.add_row({c.subscriber, c.call, batched ? batch_text(c.batch) : "-", size_text(size), z.pages,
                            s.median, s.min, s.max, own, holds, counted ? per_page(z.zap.zaps, z.zap.batches) : 0.0,
                            counted ? z.zap.shootdowns : std::uint64_t{0},
                            counted ? per_page(z.zap.lock_acquisitions, z.pages) : 0.0,
                            counted ? per_page(z.zap.shared_atomics, z.pages) : 0.0});
        }
    }
    if (config.progress) config.progress(done, total, "done");
    return report;
}

} // namespace hv::bench
