#include "vmm/cli/bench_command.hpp"

#include "vmm/bench/bench_fault.hpp"
#include "vmm/bench/bench_kvm.hpp"
#include "vmm/bench/bench_mixed.hpp"
#include "vmm/bench/bench_zap.hpp"
#include "vmm/kvm/file_util.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <CLI/CLI.hpp>

#include <chrono>
#include <ctime>
#include <fstream>
#include <optional>
#include <sstream>
#include <unistd.h>

namespace hv {

namespace {

[[noreturn]] void fail(const std::string& message) { throw VmmError(message); }

std::vector<std::string> split_list(const std::string& text) {
    std::vector<std::string> out;
    std::stringstream in(text);
    for (std::string item; std::getline(in, item, ',');) out.push_back(item);
    if (!text.empty() && text.back() == ',') out.emplace_back(); // getline drops it; "2M," is a typo, not "2M"
    return out;
}

// A range size the experiments accept: a positive multiple of 2 MiB up to 4 GiB.
std::optional<std::uint64_t> range_size(const std::string& text) {
    const auto v = parse_size(text);
    if (!v || *v == 0 || *v % (std::uint64_t{2} << 20) || *v > (std::uint64_t{4} << 30)) return std::nullopt;
    return v;
}

std::vector<std::uint64_t> parse_sizes(const std::string& text) {
    std::vector<std::uint64_t> out;
    for (const std::string& item : split_list(text)) {
        const auto v = range_size(item);
        if (!v) fail("--sizes: expected a comma-separated list of multiples of 2M up to 4G, got '" + item + "'");
        out.push_back(*v);
    }
    if (out.empty()) fail("--sizes: expected at least one size, got '" + text + "'");
    return out;
}

std::vector<std::size_t> parse_batches(const std::string& text) {
    std::vector<std::size_t> out;
    for (const std::string& item : split_list(text)) {
        if (item == "all") {
            out.push_back(0);
            continue;
        }
        const auto v = parse_u64(item);
        if (!v || *v == 0 || *v > (std::uint64_t{1} << 24))
            fail("--batches: expected a comma-separated list of entries per lock hold (1..16777216 or all), got '" +
                 item + "'");
        out.push_back(static_cast<std::size_t>(*v));
    }
    if (out.empty()) fail("--batches: expected at least one batch size, got '" + text + "'");
    return out;
}

// A list of policy names; `named` is the MMU's inverse of to_string.
template <typename T>
std::vector<T> parse_policies(const char* option, const std::string& text, std::optional<T> (*named)(std::string_view),
                              const char* accepted) {
    std::vector<T> out;
    for (const std::string& item : split_list(text)) {
        const std::optional<T> p = named(item);
        if (!p) fail(std::string(option) + ": expected a comma-separated list of " + accepted + ", got '" + item + "'");
        out.push_back(*p);
    }
    if (out.empty()) fail(std::string(option) + ": expected at least one value, got '" + text + "'");
    return out;
}

std::vector<std::uint32_t> parse_vcpus(const std::string& text) {
    std::vector<std::uint32_t> out;
    for (const std::string& item : split_list(text)) {
        const auto v = parse_u64(item);
        if (!v || *v < 1 || *v > 1024) fail("--vcpus: expected a comma-separated list of 1..1024, got '" + item + "'");
        out.push_back(static_cast<std::uint32_t>(*v));
    }
    if (out.empty()) fail("--vcpus: expected at least one vCPU count, got '" + text + "'");
    return out;
}

std::uint32_t parse_fault_threads(const std::string& text) {
    const auto v = parse_u64(text);
    if (!v || *v < 1 || *v > 64) fail("--fault-threads must be 1..64, got '" + text + "'");
    return static_cast<std::uint32_t>(*v);
}

unsigned parse_repeat(const std::string& text) {
    const auto r = parse_u64(text);
    if (!r || *r < 1 || *r > 1000) fail("--repeat must be 1..1000, got '" + text + "'");
    return static_cast<unsigned>(*r);
}

void write_file(const std::string& path, const std::string& text, const char* what) {
    std::ofstream f(path, std::ios::binary | std::ios::trunc);
    if (!f || !(f << text) || !f.flush()) fail(std::string("cannot write the ") + what + " file '" + path + "'");
}

// A one-line progress bar on a terminal; nothing when stderr is redirected.
void progress(std::size_t done, std::size_t total, const std::string& what) {
    if (!::isatty(STDERR_FILENO) || total == 0) return;
    constexpr std::size_t kWidth = 30;
    const std::size_t filled = done * kWidth / total;
    std::fprintf(stderr, "\r[%s%s] %zu/%zu %-40.40s", std::string(filled, '#').c_str(),
                 std::string(kWidth - filled, '.').c_str(), done, total, what.c_str());
    if (done == total) std::fputs("\r\033[K", stderr);
    std::fflush(stderr);
}

std::vector<mmu::LockPolicy> parse_locks(const std::string& text) {
    return parse_policies("--locks", text, &mmu::lock_policy_named, "global, rw, split");
}

std::vector<mmu::CoherencePolicy> parse_coherences(const std::string& text) {
    return parse_policies("--coherences", text, &mmu::coherence_policy_named, "seq, ptlock, range-active");
}

bench::BenchReport run_fault(const BenchCommandArgs& a) {
    bench::FaultBenchConfig fc = a.quick ? bench::quick_fault_config() : bench::FaultBenchConfig{};
    if (!a.vcpus.empty()) fc.vcpus = parse_vcpus(a.vcpus);
    if (!a.locks.empty()) fc.locks = parse_locks(a.locks);
    if (!a.coherences.empty()) fc.coherences = parse_coherences(a.coherences);
    if (!a.pages.empty()) {
        const auto p = parse_u64(a.pages);
        if (!p || *p < 1 || *p > (std::uint64_t{1} << 20)) fail("--pages must be 1..1048576, got '" + a.pages + "'");
        fc.pages = *p;
    }
    if (!a.repeat.empty()) fc.repeat = parse_repeat(a.repeat);
    fc.linux_baseline = !a.no_linux;
    fc.progress = progress;
    try {
        return bench::run_fault_bench(fc); // refuses a region above 4 GiB before anything runs
    } catch (const std::invalid_argument& e) {
        fail(e.what());
    }
}

bench::BenchReport run_zap(const BenchCommandArgs& a) {
    bench::ZapBenchConfig zc = a.quick ? bench::quick_zap_config() : bench::ZapBenchConfig{};
    if (!a.sizes.empty()) zc.sizes = parse_sizes(a.sizes);
    if (!a.batches.empty()) zc.batches = parse_batches(a.batches);
    if (!a.repeat.empty()) zc.repeat = parse_repeat(a.repeat);
    zc.linux_baseline = !a.no_linux;
    zc.progress = progress;
    return bench::run_zap_bench(zc);
}

bench::BenchReport run_mixed(const BenchCommandArgs& a) {
    bench::MixedBenchConfig mc = a.quick ? bench::quick_mixed_config() : bench::MixedBenchConfig{};
    if (!a.size.empty()) {
        const auto v = range_size(a.size);
        if (!v) fail("--size: expected a multiple of 2M up to 4G, got '" + a.size + "'");
        mc.size = *v;
    }
    if (!a.batches.empty()) mc.batches = parse_batches(a.batches);
    if (!a.locks.empty()) mc.locks = parse_locks(a.locks);
    if (!a.coherences.empty()) mc.coherences = parse_coherences(a.coherences);
    if (!a.fault_threads.empty()) mc.fault_threads = parse_fault_threads(a.fault_threads);
    if (!a.repeat.empty()) mc.repeat = parse_repeat(a.repeat);
    mc.progress = progress;
    return bench::run_mixed_bench(mc);
}

// `vmm bench kvm`: each VM is this binary's `run`; the guest is the build
// tree's touch.elf beside bin/ unless --guest names one.
bench::BenchReport run_kvm(const BenchCommandArgs& a) {
    bench::KvmBenchConfig kc = a.quick ? bench::quick_kvm_config() : bench::KvmBenchConfig{};
    if (!a.vcpus.empty()) kc.vcpus = parse_vcpus(a.vcpus);
    if (!a.locks.empty()) kc.locks = parse_locks(a.locks);
    if (!a.coherences.empty()) kc.coherences = parse_coherences(a.coherences);
    if (!a.pages.empty()) {
        const auto p = parse_u64(a.pages);
        if (!p || *p < 1 || *p > 65536) fail("--pages must be 1..65536 per vCPU, got '" + a.pages + "'");
        kc.pages = *p;
    }
    if (!a.repeat.empty()) kc.repeat = parse_repeat(a.repeat);
    kc.vmm = this_binary("bench kvm").string();
    kc.guest = a.guest.empty() ? build_tree_guest("bench kvm", "touch.elf") : a.guest;
    kc.progress = progress;
    try {
        return bench::run_kvm_bench(kc);
    } catch (const std::invalid_argument& e) {
        fail(e.what());
    } catch (const bench::KvmBenchSkipped&) {
        throw;
    } catch (const std::runtime_error& e) {
        fail(e.what()); // a VM that failed: its command and output are in the message
    }
}

std::string first_line_of(const char* path, const char* prefix) {
    std::ifstream f(path);
    for (std::string line; std::getline(f, line);)
        if (line.rfind(prefix, 0) == 0) {
            const auto colon = line.find(':');
            return colon == std::string::npos ? line : line.substr(line.find_first_not_of(" \t", colon + 1));
        }
    return "unknown";
}

// Where and when a report was measured, so that a table or plot can always
// be traced to its machine (DESIGN.md "Honest measurement").
void stamp_machine(bench::BenchReport& r) {
    char host[256] = {};
    if (::gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "unknown");
    const std::time_t now = std::chrono::system_clock::to_time_t(std::chrono::system_clock::now());
    char date[32] = {};
    std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
    r.set_meta("date", date);
    r.set_meta("host", host);
    r.set_meta("cpu", first_line_of("/proc/cpuinfo", "model name"));
    r.set_meta("cores", std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)));
}

} // namespace

BenchCommand add_bench_subcommand(CLI::App& app, BenchCommandArgs& a) {
    BenchCommand c;
    c.bench = app.add_subcommand("bench", "Run a scalability experiment; print a table, write JSON and CSV");
    c.bench->allow_extras(); // an unknown experiment gets our message, not "subcommand required"
    c.fault = c.bench->add_subcommand("fault", "Software vCPUs fault fresh pages: per vCPU count and policy, and Linux");
    c.zap = c.bench->add_subcommand("zap", "Unmap a populated range: shadow MMU per batch size, per page, and Linux");
    c.mixed = c.bench->add_subcommand("mixed", "Fault latency while another thread zaps a range, per batch size, and idle");
    c.kvm = c.bench->add_subcommand("kvm", "The touch guest under KVM: shadow paging next to KVM's own (exit 77 without /dev/kvm)");
    for (CLI::App* e : {c.fault, c.zap, c.mixed, c.kvm}) {
        e->allow_extras(false); // created under `bench`, which allows them
        e->add_flag("--quick", a.quick, "A small sweep that finishes in under a minute");
        e->add_option("--json", a.json, "Write the results as JSON to FILE");
        e->add_option("--csv", a.csv, "Write the results as CSV to FILE");
    }
    for (CLI::App* e : {c.fault, c.zap}) {
        e->add_option("--repeat", a.repeat, "Measure each configuration N times; report the median and range (default 3)");
        e->add_flag("--no-linux", a.no_linux, "Leave out the Linux baseline rows");
    }
    // mixed has no Linux rows (Linux has no secondary MMU to zap), and its
    // rows are percentiles: a range of each would be three more columns each.
    c.mixed->add_option("--repeat", a.repeat,
                        "Measure each configuration N times; report the median of each percentile (default 3)");
    c.kvm->add_option("--repeat", a.repeat, "Run each VM N times; report the median and range (default 3)");
    c.kvm->add_option("--vcpus", a.vcpus, "vCPU counts (default 1,4,16,64; --quick 1,4)");
    c.kvm->add_option("--locks", a.locks, "Shadow lock policies: global, rw, split (default rw)");
    c.kvm->add_option("--coherences", a.coherences, "Shadow coherence policies: seq, ptlock, range-active (default seq)");
    c.kvm->add_option("--pages", a.pages, "Pages each vCPU touches (default 256; --quick 64)");
    c.kvm->add_option("--guest", a.guest, "The touch guest (default: guest/touch.elf of this build tree)");
    c.fault->add_option("--vcpus", a.vcpus, "vCPU counts (default 1,2,4,...,1024; --quick 1,2,64,1024)");
    c.fault->add_option("--locks", a.locks, "Lock policies: global, rw, split (default all)");
    c.fault->add_option("--coherences", a.coherences, "Coherence policies: seq, ptlock, range-active (default all)");
    c.fault->add_option("--pages", a.pages, "Faults per vCPU, each vCPU from its own 2 MiB boundary (default 512; --quick 16)");
    c.zap->add_option("--sizes", a.sizes, "Range sizes, multiples of 2M up to 4G (default 2M,64M,1G,4G; --quick 2M,64M)");
    c.zap->add_option("--batches", a.batches, "Entries per lock hold: numbers or all (default 1,64,512,all)");
    c.mixed->add_option("--size", a.size, "The zapped range, a multiple of 2M up to 4G (default 1G; --quick 64M)");
    c.mixed->add_option("--batches", a.batches,
                        "Entries per zap lock hold: numbers or all (default 1,64,512,all; --quick 1,512,all)");
    c.mixed->add_option("--locks", a.locks, "Lock policies: global, rw, split (default all; --quick rw,global)");
    c.mixed->add_option("--coherences", a.coherences, "Coherence policies: seq, ptlock, range-active (default seq)");
    c.mixed->add_option("--fault-threads", a.fault_threads, "Threads timing faults while one zaps, 1..64 (default 1)");
    return c;
}

int run_bench_command(const BenchCommand& cmd, const BenchCommandArgs& a, std::FILE* out) {
    const auto parsed = [](const CLI::App* e) { return e && e->parsed(); };
    std::optional<bench::BenchReport> report;
    if (parsed(cmd.fault)) report = run_fault(a);
    else if (parsed(cmd.zap)) report = run_zap(a);
    else if (parsed(cmd.mixed)) report = run_mixed(a);
    else if (parsed(cmd.kvm)) {
        try {
            report = run_kvm(a);
        } catch (const bench::KvmBenchSkipped& e) {
            std::fprintf(stderr, "bench kvm: SKIPPED: %s\n", e.what());
            return kBenchSkipped;
        }
        const auto& meta = report->meta();
        for (const auto& [k, v] : meta)
            if (k == "shadow_unavailable") std::fprintf(stderr, "bench kvm: no shadow rows: %s\n", v.c_str());
    } else {
        const auto rest = cmd.bench ? cmd.bench->remaining() : std::vector<std::string>{};
        fail("bench: expected an experiment (fault, zap, mixed or kvm), got " +
             (rest.empty() ? std::string("none") : "'" + rest.front() + "'"));
    }
    stamp_machine(*report);
    std::fputs(report->table().c_str(), out);
    if (!a.json.empty()) write_file(a.json, report->json(), "JSON");
    if (!a.csv.empty()) write_file(a.csv, report->csv(), "CSV");
    return 0;
}

} // namespace hv
