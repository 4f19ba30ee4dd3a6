#include "bench_command.hpp"

#include "bench_fault.hpp"
#include "bench_zap.hpp"
#include "format.hpp"
#include "vmm_error.hpp"

#include <CLI/CLI.hpp>

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

std::vector<std::uint64_t> parse_sizes(const std::string& text) {
    std::vector<std::uint64_t> out;
    for (const std::string& item : split_list(text)) {
        const auto v = parse_size(item);
        if (!v || *v == 0 || *v % (std::uint64_t{2} << 20) || *v > (std::uint64_t{4} << 30))
            fail("--sizes: expected a comma-separated list of multiples of 2M up to 4G, got '" + item + "'");
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

} // namespace

BenchCommand add_bench_subcommand(CLI::App& app, BenchCommandArgs& a) {
    BenchCommand c;
    c.bench = app.add_subcommand("bench", "Run a scalability experiment; print a table, write JSON and CSV");
    c.bench->allow_extras(); // an unknown experiment gets our message, not "subcommand required"
    c.fault = c.bench->add_subcommand("fault", "Software vCPUs fault fresh pages: per vCPU count and policy, and Linux");
    c.zap = c.bench->add_subcommand("zap", "Unmap a populated range: shadow MMU per batch size, per page, and Linux");
    for (CLI::App* e : {c.fault, c.zap}) {
        e->allow_extras(false); // created under `bench`, which allows them
        e->add_flag("--quick", a.quick, "A small sweep that finishes in under a minute");
        e->add_option("--repeat", a.repeat, "Measure each configuration N times; report the median and range (default 3)");
        e->add_option("--json", a.json, "Write the results as JSON to FILE");
        e->add_option("--csv", a.csv, "Write the results as CSV to FILE");
        e->add_flag("--no-linux", a.no_linux, "Leave out the Linux baseline rows");
    }
    c.fault->add_option("--vcpus", a.vcpus, "vCPU counts (default 1,2,4,...,1024; --quick 1,2,64,1024)");
    c.fault->add_option("--locks", a.locks, "Lock policies: global, rw, split (default all)");
    c.fault->add_option("--coherences", a.coherences, "Coherence policies: seq, ptlock, range-active (default all)");
    c.fault->add_option("--pages", a.pages, "Faults per configuration, split among the vCPUs (default 8192; --quick 4096)");
    c.zap->add_option("--sizes", a.sizes, "Range sizes, multiples of 2M up to 4G (default 2M,64M,1G,4G; --quick 2M,64M)");
    c.zap->add_option("--batches", a.batches, "Entries per lock hold: numbers or all (default 1,64,512,all)");
    return c;
}

int run_bench_command(const BenchCommand& cmd, const BenchCommandArgs& a, std::FILE* out) {
    const bool fault = cmd.fault && cmd.fault->parsed(), zap = cmd.zap && cmd.zap->parsed();
    if (!fault && !zap) {
        const auto rest = cmd.bench ? cmd.bench->remaining() : std::vector<std::string>{};
        fail("bench: expected an experiment (fault or zap), got " +
             (rest.empty() ? std::string("none") : "'" + rest.front() + "'"));
    }
    std::optional<bench::BenchReport> report;
    if (fault) {
        bench::FaultBenchConfig fc = a.quick ? bench::quick_fault_config() : bench::FaultBenchConfig{};
        if (!a.vcpus.empty()) fc.vcpus = parse_vcpus(a.vcpus);
        if (!a.locks.empty())
            fc.locks = parse_policies("--locks", a.locks, &mmu::lock_policy_named, "global, rw, split");
        if (!a.coherences.empty())
            fc.coherences =
                parse_policies("--coherences", a.coherences, &mmu::coherence_policy_named, "seq, ptlock, range-active");
        if (!a.pages.empty()) {
            const auto p = parse_u64(a.pages);
            if (!p || *p < 1 || *p > (std::uint64_t{1} << 20)) fail("--pages must be 1..1048576, got '" + a.pages + "'");
            fc.pages = *p;
        }
        for (const std::uint32_t v : fc.vcpus)
            if (v > fc.pages)
                fail("--vcpus " + std::to_string(v) + " exceeds --pages " + std::to_string(fc.pages) +
                     ": every vCPU needs at least one page");
        if (!a.repeat.empty()) fc.repeat = parse_repeat(a.repeat);
        fc.linux_baseline = !a.no_linux;
        fc.progress = progress;
        report = bench::run_fault_bench(fc);
    } else {
        bench::ZapBenchConfig zc = a.quick ? bench::quick_zap_config() : bench::ZapBenchConfig{};
        if (!a.sizes.empty()) zc.sizes = parse_sizes(a.sizes);
        if (!a.batches.empty()) zc.batches = parse_batches(a.batches);
        if (!a.repeat.empty()) zc.repeat = parse_repeat(a.repeat);
        zc.linux_baseline = !a.no_linux;
        zc.progress = progress;
        report = bench::run_zap_bench(zc);
    }
    std::fputs(report->table().c_str(), out);
    if (!a.json.empty()) write_file(a.json, report->json(), "JSON");
    if (!a.csv.empty()) write_file(a.csv, report->csv(), "CSV");
    return 0;
}

} // namespace hv
