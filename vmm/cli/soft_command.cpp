// `vmm soft`: see soft_command.hpp.
#include "vmm/cli/soft_command.hpp"

#include "vmm/cli/mmu_options.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>

namespace hv {

namespace {

using namespace hv::mmu;

constexpr std::uint64_t kMaxRegionPages = std::uint64_t{1} << 22; // 16 GiB of guest pages

[[noreturn]] void fail(const std::string& message) { throw VmmError(message); }

std::uint64_t uint_option(const char* name, const std::string& text, std::uint64_t lo, std::uint64_t hi) {
    const auto v = parse_u64(text);
    if (!v || *v < lo || *v > hi)
        fail(std::string(name) + " must be " + std::to_string(lo) + ".." + std::to_string(hi) + ", got '" + text + "'");
    return *v;
}

std::string fmt(double v, int prec = 2) {
    char b[64];
    std::snprintf(b, sizeof b, "%.*f", prec, v);
    return b;
}

std::string number(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
}

double per(std::uint64_t a, std::uint64_t b) { return b ? static_cast<double>(a) / static_cast<double>(b) : 0.0; }

// A rate option: operations per second, 0 = off.
double rate_option(const char* name, const std::string& text, const char* what) {
    const auto v = parse_double(text);
    if (!v || !std::isfinite(*v) || *v < 0 || *v > 1e7)
        fail(std::string(name) + " must be " + what + " per second in 0..10000000 (0 = off), got '" + text + "'");
    return *v;
}

// The defaults of the software vCPUs' own churn and the device, so that a
// plain `vmm soft` exercises every one of them.
constexpr double kDefaultMemslotRate = 20, kDefaultZeroMergeRate = 200, kDefaultRangeRate = 20;
constexpr double kDefaultDeviceRate = 20000;
constexpr std::uint32_t kDefaultMemslots = 4, kMaxMemslots = 64;

void parse_soft_churn(const SoftCommandArgs& a, SoftRunConfig& r) {
    auto& rate = r.soft_churn.rate;
    rate[static_cast<std::size_t>(SoftChurnOp::Memslot)] =
        a.churn_memslot.empty() ? kDefaultMemslotRate
                                : rate_option("--churn-memslot", a.churn_memslot, "memslot removals");
    rate[static_cast<std::size_t>(SoftChurnOp::ZeroMerge)] =
        a.churn_zero_merge.empty() ? kDefaultZeroMergeRate
                                   : rate_option("--churn-zero-merge", a.churn_zero_merge, "zero-page merges");
    rate[static_cast<std::size_t>(SoftChurnOp::Range)] =
        a.churn_range.empty() ? kDefaultRangeRate : rate_option("--churn-range", a.churn_range, "range operations");
    r.device_rate = a.external_tlb.empty() ? kDefaultDeviceRate
                                           : rate_option("--external-tlb", a.external_tlb, "device translations");
    // The default divides small regions into fewer slots: one page at least each.
    r.memslots = static_cast<std::uint32_t>(std::min<std::uint64_t>(kDefaultMemslots, r.region_pages()));
    if (!a.memslots.empty()) {
        r.memslots = static_cast<std::uint32_t>(uint_option("--memslots", a.memslots, 1, kMaxMemslots));
        if (r.memslots > r.region_pages())
            fail("--memslots: expected at most one memslot per region page (" + std::to_string(r.region_pages()) +
                 " pages), got " + a.memslots);
    }
    if (!a.time_limit.empty()) {
        const auto t = parse_double(a.time_limit);
        if (!t || !std::isfinite(*t) || *t <= 0 || *t > 2 * 86400)
            fail("--time-limit must be a number of seconds in (0, 172800], got '" + a.time_limit + "'");
        if (!r.ops_per_vcpu && *t <= r.seconds)
            fail("--time-limit must be more than the run's --seconds (" + number(r.seconds) + "), got '" +
                 a.time_limit + "'");
        r.time_limit = *t;
    }
}

} // namespace

SoftCommandOptions parse_soft_args(const SoftCommandArgs& a) {
    SoftCommandOptions o;
    auto& r = o.run;
    if (!a.vcpus.empty()) {
        const auto v = parse_u64(a.vcpus);
        if (!v || *v < 1 || *v > kMaxVcpus) fail("--vcpus must be 1..1024, got " + a.vcpus);
        r.vcpus = static_cast<std::uint32_t>(*v);
    }
    if (!a.seconds.empty() && !a.ops.empty()) fail("--seconds and --ops exclude each other: give one");
    if (!a.seconds.empty()) {
        const auto s = parse_double(a.seconds);
        if (!s || *s <= 0 || *s > 86400) fail("--seconds must be a number of seconds in (0, 86400], got '" + a.seconds + "'");
        r.seconds = *s;
    }
    if (!a.ops.empty()) r.ops_per_vcpu = uint_option("--ops", a.ops, 1, std::uint64_t{1} << 40);
    if (!a.pattern.empty()) {
        if (a.pattern == "seq" || a.pattern == "sequential") r.pattern = AccessPattern::Sequential;
        else if (a.pattern == "random") r.pattern = AccessPattern::Random;
        else fail("--pattern: expected seq or random, got '" + a.pattern + "'");
    }
    if (!a.sharing.empty()) {
        if (a.sharing == "disjoint") r.sharing = Sharing::Disjoint;
        else if (a.sharing == "shared") r.sharing = Sharing::Shared;
        else fail("--sharing: expected disjoint or shared, got '" + a.sharing + "'");
    }
    if (!a.writes.empty()) {
        const auto w = parse_double(a.writes);
        if (!w || *w < 0 || *w > 1) fail("--writes must be a fraction 0..1, got '" + a.writes + "'");
        r.write_fraction = *w;
    }
    if (!a.pages.empty()) r.pages = uint_option("--pages", a.pages, 1, kMaxRegionPages);
    if (r.region_pages() > kMaxRegionPages)
        fail("--pages: " + std::to_string(r.pages) + " pages per vCPU x " + std::to_string(r.vcpus) +
             " vCPUs is more than " + std::to_string(kMaxRegionPages) + " pages in all");
    if (!a.tlb.empty()) {
        const auto t = uint_option("--tlb", a.tlb, 1, 65536);
        r.tlb.entries = static_cast<std::uint32_t>(t);
        r.tlb.ways = t % 4 == 0 ? 4 : 1; // 4-way set associative, or direct mapped for odd sizes
    }
    if (!a.tlb_model.empty()) {
        if (a.tlb_model == "recheck") r.tlb.model = TlbModel::Recheck;
        else if (a.tlb_model == "hardware") r.tlb.model = TlbModel::Hardware;
        else fail("--tlb-model: expected recheck or hardware, got '" + a.tlb_model + "'");
    }
    parse_mmu_policies({a.lock, a.coherence, a.batch, a.churn}, o.shadow, r.churn_rate);
    if (!a.seed.empty()) {
        const auto s = parse_u64(a.seed);
        if (!s) fail("--seed must be a non-negative integer, got '" + a.seed + "'");
        r.seed = *s;
    }
    if (!a.frames.empty()) o.frames = uint_option("--frames", a.frames, 64, std::uint64_t{1} << 24);
    parse_soft_churn(a, r);
    o.json = a.json;
    o.shadow.vcpus = r.vcpus;
    return o;
}

CLI::App* add_soft_subcommand(CLI::App& app, SoftCommandArgs& a) {
    auto* s = app.add_subcommand("soft", "Run software vCPUs over the shadow MMU with host churn; check for lost writes");
    s->add_option("--vcpus", a.vcpus, "vCPU threads, 1..1024 (default 4)");
    s->add_option("--seconds", a.seconds, "Run for S seconds (default 2)");
    s->add_option("--ops", a.ops, "Instead of --seconds: N accesses per vCPU");
    s->add_option("--pattern", a.pattern, "seq or random (default random)");
    s->add_option("--sharing", a.sharing, "disjoint (each vCPU its pages) or shared (default disjoint)");
    s->add_option("--writes", a.writes, "Fraction of accesses that write, 0..1 (default 0.3)");
    s->add_option("--pages", a.pages, "Working set: pages per vCPU (disjoint) or in total (shared) (default 256)");
    s->add_option("--tlb", a.tlb, "TLB entries per vCPU (default 64; 4-way when a multiple of 4)");
    s->add_option("--tlb-model", a.tlb_model,
                  "recheck (an access checks its TLB entry against the host PTE) or hardware (used until flushed, "
                  "as a CPU does) (default recheck)");
    s->add_option("--lock", a.lock, "Shadow MMU lock policy: global, rw or split (default rw)");
    s->add_option("--coherence", a.coherence, "seq, ptlock or range-active (default seq)");
    s->add_option("--batch", a.batch, "Entries zapped per lock hold; 0 = unlimited (default 512)");
    s->add_option("--churn", a.churn, "Host operations: OP=RATE,... with OP in migrate, unmap, protect, merge, swap, age");
    s->add_option("--seed", a.seed, "Random seed (default 1)");
    s->add_option("--json", a.json, "Write the results as JSON to FILE");
    s->add_option("--frames", a.frames, "Frame space size in 4 KiB frames (default: sized automatically)");
    s->add_option("--churn-memslot", a.churn_memslot,
                  "Memslot removals per second, each added back at least 1 ms later; 0 = off (default 20)");
    s->add_option("--churn-zero-merge", a.churn_zero_merge,
                  "Per second: two pages zeroed (as unmap does) and merged; 0 = off (default 200)");
    s->add_option("--churn-range", a.churn_range,
                  "Range unmaps/protects per second, 1-3 zap batches long across a batch boundary; 0 = off "
                  "(default 20)");
    s->add_option("--external-tlb", a.external_tlb,
                  "Device translations per second through an external TLB beside the shadow MMU; 0 = none "
                  "(default 20000)");
    s->add_option("--memslots", a.memslots, "Memslots the region is split into, 1..64 (default 4)");
    s->add_option("--time-limit", a.time_limit,
                  "Fail the run if it is not over after S seconds (default: --seconds + 180, or 600 with --ops)");
    return s;
}

namespace {

struct Row {
    std::string key; // JSON key
    std::string label;
    std::string value; // JSON number or string (quoted by the caller)
    bool text = false;
};

std::vector<Row> rows(const SoftCommandOptions& o, const SoftRunResult& r) {
    const auto& m = r.mmu;
    const auto& f = r.mmu_faults;
    const auto& z = r.mmu_zaps;
    const auto& v = r.vcpu;
    const auto u = [](std::uint64_t x) { return std::to_string(x); };
    std::vector<Row> out = {
        {"vcpus", "vcpus", u(o.run.vcpus)},
        {"lock", "lock policy", to_string(o.shadow.lock), true},
        {"coherence", "coherence policy", to_string(o.shadow.coherence), true},
        {"batch", "batch (0 = unlimited)", u(o.shadow.batch)},
        {"tlb_model", "tlb model", to_string(o.run.tlb.model), true},
        {"pattern", "pattern", to_string(o.run.pattern), true},
        {"sharing", "sharing", to_string(o.run.sharing), true},
        {"pages", "region pages", u(o.run.region_pages())},
        {"seconds", "seconds", fmt(r.seconds, 3)},
        {"accesses", "accesses", u(v.accesses)},
        {"tlb_hits", "tlb hits", u(v.tlb_hits)},
        {"tlb_misses", "tlb misses", u(v.tlb_misses)},
        {"walks", "walks", u(v.walks)},
        {"faults", "faults", u(m.faults)},
        {"faults_per_second", "faults/s", fmt(per(m.faults, 1) / (r.seconds > 0 ? r.seconds : 1), 0)},
        {"installs", "installs", u(m.installs)},
        {"installs_per_second", "installs/s", fmt(per(m.installs, 1) / (r.seconds > 0 ? r.seconds : 1), 0)},
        {"retries", "retries", u(m.retries)},
        {"refused", "refused", u(m.refused)},
        {"out_of_frames", "out of frames", u(m.out_of_frames)},
        {"zaps", "zaps", u(m.zaps)},
        {"batches", "batches (zap lock holds)", u(m.batches)},
        {"zaps_per_lock_hold", "zaps per lock hold", fmt(per(m.zaps, m.batches))},
        {"max_batch", "largest batch", u(m.max_batch)},
        {"shootdowns", "shootdowns", u(m.shootdowns)},
        {"shootdown_targets", "shootdown targets", u(m.shootdown_targets)},
        {"shootdown_requests", "shootdown requests (acked)", u(r.shootdown.requests)},
        {"idle_requests", "requests to idle vCPUs (not waited)", u(r.shootdown.idle_requests)},
        {"shootdown_deferred", "requests left pending (vCPU not running)", u(r.shootdown.deferred)},
        {"walk_registrations", "walk registrations", u(m.walk_registrations)},
        {"mask_departures", "mask departures (TLB held nothing of the table)", u(m.mask_departures)},
        {"flushes_honoured", "flushes honoured by vCPUs", u(v.flushes_honoured)},
        {"lock_acquisitions", "fault: shadow lock acquisitions", u(f.lock_acquisitions)},
        {"lock_acquisitions_per_fault", "fault: shadow locks per fault", fmt(per(f.lock_acquisitions, f.faults))},
        {"shared_atomics", "fault: shadow shared-line atomics", u(f.shared_atomics)},
        {"shared_atomics_per_fault", "fault: shadow shared-line atomics/fault", fmt(per(f.shared_atomics, f.faults), 4)},
        {"host_lock_acquisitions_per_fault", "fault: host locks per fault", fmt(per(f.host_lock_acquisitions, f.faults))},
        {"host_shared_atomics_per_fault", "fault: host shared-line atomics/fault",
         fmt(per(f.host_shared_atomics, f.faults), 4)},
        {"zap_lock_acquisitions", "zap: lock acquisitions", u(z.lock_acquisitions)},
    };
    for (std::size_t k = 0; k < kChurnOps; ++k) {
        const std::string n = to_string(static_cast<ChurnOp>(k));
        out.push_back({"churn_" + n, "churn " + n + " (done/attempted)", u(r.churn.done[k])});
        out.push_back({"churn_" + n + "_attempted", "", u(r.churn.attempted[k])});
    }
    for (std::size_t k = 0; k < kSoftChurnOps; ++k) {
        const auto op = static_cast<SoftChurnOp>(k);
        std::string key = to_string(op);
        std::replace(key.begin(), key.end(), '-', '_');
        const char* done = op == SoftChurnOp::Memslot ? "removed" : op == SoftChurnOp::ZeroMerge ? "merged" : "done";
        out.push_back({"churn_" + key, std::string("churn ") + to_string(op) + " (" + done + "/attempted)",
                       u(r.soft_churn.done[k])});
        out.push_back({"churn_" + key + "_attempted", "", u(r.soft_churn.attempted[k])});
    }
    const auto& x = r.external_tlb;
    const std::vector<Row> more = {
        {"memslot_readds", "memslots added back", u(r.soft_churn.memslot_readds)},
        {"no_memslot", "accesses with no memslot (removed)", u(v.no_memslot)},
        {"cow_breaks", "copy-on-write breaks (host)", u(r.cow_breaks)},
        {"range_pages", "range pages", u(r.soft_churn.range_pages)},
        {"range_crossings", "ranges across a batch boundary", u(r.soft_churn.range_crossings)},
        {"resumed_batches", "zap batches resumed mid-range", u(m.resumed_batches)},
        {"external_tlb_rate", "external TLB translations/s (0 = off)", number(o.run.device_rate)},
        {"device_translations", "device translations (ok/attempted)", u(r.device.ok)},
        {"device_translations_attempted", "", u(r.device.translations)},
        {"device_retries", "device retries (invalidation active)", u(r.device.retries)},
        {"external_tlb_refills", "external TLB refills", u(x.refills)},
        {"external_tlb_invalidations", "external TLB invalidations", u(x.range_flushes + x.page_flushes)},
        {"external_tlb_entries_dropped", "external TLB entries flushed", u(x.entries_dropped)},
        {"shootdown_abandoned", "shootdown waits abandoned", u(r.shootdown.abandoned)},
        {"timed_out", "time limit reached", r.timed_out ? "true" : "false"},
    };
    out.insert(out.end(), more.begin(), more.end());
    out.push_back({"stale_dropped", "stale TLB entries dropped", u(v.stale_dropped)});
    out.push_back({"unmap_excused", "slots zeroed by unmap", u(v.unmap_excused)});
    out.push_back({"lost_writes", "lost writes", u(r.lost_writes)});
    out.push_back({"violations", "violations", u(r.violations)});
    out.push_back({"audit_problems", "audit problems", u(r.audit.size())});
    return out;
}

} // namespace

std::string soft_summary(const SoftCommandOptions& o, const SoftRunResult& r) {
    const auto all = rows(o, r);
    std::string out;
    char line[160];
    for (std::size_t i = 0; i < all.size(); ++i) {
        const Row& row = all[i];
        if (row.label.empty()) continue;
        std::string value = row.value;
        if (i + 1 < all.size() && all[i + 1].label.empty()) value += " / " + all[i + 1].value; // done / attempted
        std::snprintf(line, sizeof line, "%-34s %s\n", row.label.c_str(), value.c_str());
        out += line;
    }
    for (const auto& d : r.details) out += "  " + d + "\n";
    for (std::size_t i = 0; i < r.audit.size() && i < 8; ++i) out += "  audit: " + r.audit[i] + "\n";
    out += r.ok() ? "result: ok\n" : "result: FAILED\n";
    return out;
}

std::string soft_json(const SoftCommandOptions& o, const SoftRunResult& r) {
    std::string out = "{\n";
    for (const Row& row : rows(o, r)) {
        out += "  \"" + row.key + "\": ";
        out += row.text ? json_string(row.value) : row.value;
        out += ",\n";
    }
    out += "  \"details\": [";
    for (std::size_t i = 0; i < r.details.size(); ++i)
        out += (i ? ", " : "") + json_string(r.details[i]);
    out += "],\n  \"ok\": ";
    out += r.ok() ? "true" : "false";
    out += "\n}\n";
    return out;
}

int run_soft_command(const SoftCommandOptions& o, std::FILE* out) {
    std::unique_ptr<SoftRig> rig;
    try {
        rig = std::make_unique<SoftRig>(o.run, o.shadow, o.frames);
    } catch (const std::exception& e) {
        throw VmmError(std::string("soft: cannot set up the frame space and MMU: ") + e.what());
    }
    const SoftRunResult r = rig->run(o.run);
    std::fputs(soft_summary(o, r).c_str(), out);
    if (!o.json.empty()) {
        std::ofstream f(o.json);
        f << soft_json(o, r);
        f.close();
        if (!f) throw VmmError("--json: cannot write '" + o.json + "'");
    }
    return r.ok() ? 0 : 1;
}

} // namespace hv
