#include "vmm/bench/bench_kvm.hpp"

#include "mmu/base/units.hpp"
#include "vmm/bench/child_process.hpp"
#include "vmm/kvm/kvm.hpp"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sstream>
#include <unistd.h>

namespace hv::bench {

namespace {

using namespace hv::mmu;

constexpr std::uint32_t kMaxVcpus = 1024;
constexpr std::uint64_t kMiB = 1ull << 20;
// Identity mode: the touch guest's fresh pages start at 16 MiB and the
// stacks (16 KiB per vCPU) hang from the top of RAM (guest/touch.c, abi.h).
constexpr std::uint64_t kIdentityBase = 16 * kMiB;
constexpr std::uint64_t kStackBytes = 16 * 1024;

bool readable_file(const std::string& path) { return ::access(path.c_str(), R_OK) == 0; }

// The last `count` lines of a child's output, for an error message.
std::string last_lines(const std::string& text, std::size_t count) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) lines.push_back(line);
    std::string out;
    for (std::size_t i = lines.size() > count ? lines.size() - count : 0; i < lines.size(); ++i) out += lines[i] + "\n";
    return out;
}

struct Paging {
    bool shadow = false;
    LockPolicy lock = LockPolicy::Rw;
    CoherencePolicy coherence = CoherencePolicy::Seq;
};

std::vector<std::string> vm_command(const KvmBenchConfig& c, const Paging& p, std::uint32_t vcpus) {
    const std::uint64_t touched = std::uint64_t{vcpus} * c.pages * kPage;
    std::vector<std::string> argv{c.vmm, "run", "--stats", "--cpus", std::to_string(vcpus), "--timeout",
                                  std::to_string(c.timeout_s), "--cmdline", "pages=" + std::to_string(c.pages)};
    if (p.shadow) {
        // The demand-mapped region just holds the pages touched.
        argv.insert(argv.end(), {"--paging", "shadow", "--lock", std::string(to_string(p.lock)), "--coherence",
                                 std::string(to_string(p.coherence)), "--region", std::to_string(touched / 1024) + "K"});
    } else {
        // RAM for the image, the pages touched and the stacks, with slack.
        const std::uint64_t need = kIdentityBase + touched + vcpus * kStackBytes + 16 * kMiB;
        const std::uint64_t mem = std::max<std::uint64_t>(128, (need + kMiB - 1) / kMiB);
        argv.insert(argv.end(), {"--mem", std::to_string(mem) + "M"});
    }
    argv.push_back(c.guest);
    return argv;
}

std::string joined(const std::vector<std::string>& argv) {
    std::string s;
    for (const std::string& a : argv) s += (s.empty() ? "" : " ") + a;
    return s;
}

TouchRun run_vm(const KvmBenchConfig& c, const Paging& p, std::uint32_t vcpus) {
    const std::vector<std::string> argv = vm_command(c, p, vcpus);
    const ChildResult r = run_child(argv);
    if (r.status != 0)
        throw std::runtime_error("bench kvm: `" + joined(argv) + "` exited with status " + std::to_string(r.status) +
                                 "; its output ended:\n" + last_lines(r.output, 8));
    TouchRun t;
    try {
        t = parse_touch_run(r.output);
    } catch (const std::runtime_error& e) {
        throw std::runtime_error(std::string(e.what()) + " (from `" + joined(argv) + "`)");
    }
    if (t.shadow != p.shadow || t.vcpus != vcpus || t.pages != c.pages)
        throw std::runtime_error("bench kvm: `" + joined(argv) + "` reported " + (t.shadow ? "shadow" : "identity") +
                                 " paging, " + std::to_string(t.vcpus) + " vCPUs x " + std::to_string(t.pages) +
                                 " pages, not what it was asked for");
    return t;
}

std::vector<Column> kvm_columns() {
    return {{"paging"},
            {"lock"},
            {"coherence"},
            {"vcpus"},
            {"pages_per_vcpu"},
            {"cycles_per_touch", 0},
            {"cpt_min", 0},
            {"cpt_max", 0},
            {"vs_identity", 2},
            {"fastest_vcpu_cycles", 0},
            {"guest_faults_per_touch", 3},
            {"retries_per_fault", 3},
            {"fault_p50_ns"},
            {"fault_p99_ns"},
            {"shootdowns"}};
}

double ratio(std::uint64_t n, std::uint64_t d) { return d ? static_cast<double>(n) / static_cast<double>(d) : 0; }

} // namespace

KvmBenchConfig quick_kvm_config() {
    KvmBenchConfig c;
    c.vcpus = {1, 4};
    c.pages = 64;
    c.repeat = 1;
    return c;
}

KvmAvailability kvm_bench_availability(const std::string& dev_kvm, const std::string& sysfs_root) {
    KvmAvailability a;
    const int fd = ::open(dev_kvm.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) {
        a.identity_reason = "cannot open " + dev_kvm + ": " + std::strerror(errno) +
                            " (run it where KVM is, e.g. inside scripts/nested-kvm.sh)";
        a.shadow_reason = a.identity_reason;
        return a;
    }
    ::close(fd);
    a.identity = true;
    const TdpStatus tdp = tdp_status(sysfs_root);
    a.shadow = tdp.enabled;
    if (!a.shadow)
        a.shadow_reason = "shadow paging needs KVM with EPT/NPT, found " +
                          (tdp.module.empty() ? std::string("no kvm_intel or kvm_amd module")
                           : tdp.parameter.empty() ? tdp.module + " (no EPT/NPT)"
                                                   : tdp.module + " with " + tdp.parameter + "=N");
    return a;
}

TouchRun parse_touch_run(std::string_view output) {
    TouchRun t;
    bool have_header = false, have_cycles = false, have_ok = false, have_faults = false, have_service = false;
    std::istringstream in{std::string(output)};
    for (std::string line; std::getline(in, line);) {
        unsigned long long a = 0, b = 0, c = 0, d = 0;
        char mode[16] = {};
        if (std::sscanf(line.c_str(), "touch: %15s paging, %llu vCPUs x %llu pages: %llu page faults", mode, &a, &b,
                        &c) == 4) {
            t.shadow = std::strcmp(mode, "shadow") == 0;
            t.vcpus = a, t.pages = b, t.guest_faults = c;
            have_header = true;
        } else if (std::sscanf(line.c_str(),
                               "touch: %llu TSC cycles per first touch in all (%llu cycles for %llu pages), fastest "
                               "vCPU %llu cycles per page",
                               &a, &b, &c, &d) == 4) {
            t.cycles_per_touch = a, t.fastest_vcpu_cycles = d;
            have_cycles = true;
        } else if (std::sscanf(line.c_str(), "touch: all %llu pages read back ok", &a) == 1) {
            have_ok = true;
        } else if (std::sscanf(line.c_str(), " faults %llu (installs %llu, retries %llu", &a, &b, &c) == 3) {
            t.vmm_faults = a, t.installs = b, t.retries = c;
            have_faults = true;
        } else if (std::sscanf(line.c_str(), " fault service p50 %llu ns, p99 %llu ns", &a, &b) == 2) {
            t.fault_p50_ns = a, t.fault_p99_ns = b;
            have_service = true;
        } else if (std::sscanf(line.c_str(), " shootdowns %llu, targets", &a) == 1) {
            t.shootdowns = a;
        }
    }
    const char* missing = !have_header   ? "touch: <mode> paging, <n> vCPUs x <p> pages: <f> page faults"
                          : !have_cycles ? "touch: <c> TSC cycles per first touch in all (...), fastest vCPU <z> cycles"
                          : !have_ok     ? "touch: all <n> pages read back ok"
                          : t.shadow && !have_faults  ? "the --stats line 'faults <n> (installs <i>, retries <r>, ...'"
                          : t.shadow && !have_service ? "the --stats line 'fault service p50 <a> ns, p99 <b> ns'"
                                                      : nullptr;
    if (missing) throw std::runtime_error(std::string("bench kvm: expected the line '") + missing + "' in the output");
    return t;
}

BenchReport run_kvm_bench(const KvmBenchConfig& config) {
    if (config.repeat == 0) throw std::invalid_argument("bench kvm: --repeat must be at least 1, got 0");
    if (config.pages == 0) throw std::invalid_argument("bench kvm: --pages must be at least 1, got 0");
    for (const std::uint32_t v : config.vcpus)
        if (v == 0 || v > kMaxVcpus)
            throw std::invalid_argument("bench kvm: vCPU counts must be 1..1024, got " + std::to_string(v));
    if (!readable_file(config.guest))
        throw std::invalid_argument("bench kvm: expected the touch guest at '" + config.guest +
                                    "' (build it, or give --guest FILE)");
    if (::access(config.vmm.c_str(), X_OK) != 0)
        throw std::invalid_argument("bench kvm: expected the vmm binary at '" + config.vmm + "'");

    const KvmAvailability avail = kvm_bench_availability(config.dev_kvm, config.sysfs_root);
    if (!avail.identity) throw KvmBenchSkipped(avail.identity_reason);

    BenchReport report("kvm", kvm_columns());
    report.set_meta("what", "first touches of fresh 4 KiB pages by the touch guest under KVM; guest TSC cycles per "
                            "touch, median over repeats; shadow vs KVM's own paging (identity) in the same run");
    report.set_meta("pages_per_vcpu", std::to_string(config.pages));
    report.set_meta("repeat", std::to_string(config.repeat));
    report.set_meta("cores", std::to_string(::sysconf(_SC_NPROCESSORS_ONLN)));
    report.set_meta("nested", std::getenv("HV_NESTED") ? "yes (inside scripts/nested-kvm.sh)" : "no");
    if (!avail.shadow) report.set_meta("shadow_unavailable", avail.shadow_reason);

    std::vector<Paging> pagings{{}};
    if (avail.shadow)
        for (const LockPolicy lock : config.locks)
            for (const CoherencePolicy coh : config.coherences) pagings.push_back({true, lock, coh});

    const std::size_t total = config.vcpus.size() * pagings.size();
    std::size_t done = 0;
    for (const std::uint32_t vcpus : config.vcpus) {
        double identity_cycles = 0;
        for (const Paging& p : pagings) {
            if (config.progress)
                config.progress(done, total,
                                p.shadow ? std::string("shadow ") + to_string(p.lock) + " " + to_string(p.coherence) +
                                               " " + std::to_string(vcpus)
                                         : "identity " + std::to_string(vcpus));
            std::vector<double> cycles;
            TouchRun last;
            for (unsigned r = 0; r < config.repeat; ++r) {
                last = run_vm(config, p, vcpus);
                cycles.push_back(static_cast<double>(last.cycles_per_touch));
            }
            const Summary s = summarize(cycles);
            if (!p.shadow) identity_cycles = s.median;
            const std::uint64_t touched = std::uint64_t{vcpus} * config.pages;
            report.add_row({std::string(p.shadow ? "shadow" : "identity"),
                            std::string(p.shadow ? to_string(p.lock) : "-"),
                            std::string(p.shadow ? to_string(p.coherence) : "-"), std::uint64_t{vcpus}, config.pages,
                            s.median, s.min, s.max, identity_cycles > 0 ? s.median / identity_cycles : 0.0,
                            last.fastest_vcpu_cycles, ratio(last.guest_faults, touched),
                            ratio(last.retries, last.vmm_faults), last.fault_p50_ns, last.fault_p99_ns,
                            last.shootdowns});
            ++done;
        }
    }
    if (config.progress) config.progress(total, total, "done");
    return report;
}

} // namespace hv::bench
