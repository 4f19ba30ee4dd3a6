// `vmm bench kvm` without KVM: the parser of a touch run's output, the
// availability probe over a fake /dev/kvm and sysfs, and the whole sweep
// driven against a fake `vmm` (a shell script printing what the real one
// prints), which checks the commands it is given. The real VMs run in the
// `bench.kvm-quick` test inside the nested KVM host.
#include "tests/support/bench_cells.hpp"
#include "tests/support/fake_sysfs.hpp"
#include "tests/support/text_match.hpp"
#include "vmm/bench/bench_kvm.hpp"
#include "vmm/bench/child_process.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <sys/stat.h>

using namespace hv::bench;
using bench_cells::d;
using bench_cells::s;
using bench_cells::u;
using hv::test::contains;
using hv::test::message_of;

namespace {

// What `vmm run --paging shadow --stats --cpus 4 --cmdline pages=64 touch.elf`
// prints (guest/touch.c's lines, then ShadowVm::stats()).
const char* const kShadowRun =
    "touch: shadow paging, 4 vCPUs x 64 pages: 256 page faults sent to the VMM\n"
    "touch: 5210 TSC cycles per first touch in all (1333760 cycles for 256 pages), fastest vCPU 4800 cycles per "
    "page; 2170 ns per first touch in all, 460000 first touches per second\n"
    "touch: all 256 pages read back ok (0 discarded by host unmaps)\n"
    "vmm stats:\n"
    "  paging               shadow (lock rw, coherence seq, batch 512)\n"
    "  faults               260 (installs 258, retries 2, no memslot 0, refused 0, no memory 0)\n"
    "  fault service        p50 8123 ns, p99 40211 ns (260 timed)\n"
    "  zaps                 0 entries in 0 batches (largest 0)\n"
    "  shootdowns           3, targets 9 (acknowledged in guest 9, deferred to entry 0), NMIs 9, vCPUs not ready 0\n";

const char* const kIdentityRun =
    "touch: identity paging, 2 vCPUs x 16 pages: 0 page faults sent to the VMM\n"
    "touch: 19923 TSC cycles per first touch in all (637539 cycles for 32 pages), fastest vCPU 35935 cycles per page\n"
    "touch: all 32 pages read back ok (0 discarded by host unmaps)\n"
    "vmm stats:\n"
    "  exits                498\n";

std::string error_of(std::string_view output) {
    return message_of<std::runtime_error>([&] { parse_touch_run(output); });
}

// A scratch directory with a fake /dev/kvm (a plain file opens read-write
// just as well), a fake /sys/module and a fake vmm and guest.
struct FakeHost {
    FakeSysfs sysfs;
    std::filesystem::path dir = sysfs.root / "host";
    FakeHost() {
        std::filesystem::create_directories(dir);
        std::ofstream(dir / "kvm") << "";
        std::ofstream(dir / "touch.elf") << "not really an ELF";
    }
    // The fake vmm: prints a touch run for the --cpus and pages= it is given,
    // identity at `identity_cycles` per touch and shadow at `shadow_cycles`;
    // the shadow run fails when `fail_shadow`. It also records its arguments.
    std::string vmm(unsigned identity_cycles, unsigned shadow_cycles, bool fail_shadow = false) {
        const auto path = dir / "vmm";
        std::ofstream f(path);
        f << "#!/bin/sh\n"
             "echo \"$*\" >> '" << (dir / "calls").string() << "'\n"
             "cpus=0 pages=0 mode=identity\n"
             "while [ $# -gt 0 ]; do\n"
             "  case $1 in\n"
             "    --cpus) cpus=$2; shift ;;\n"
             "    --cmdline) pages=${2#pages=}; shift ;;\n"
             "    --paging) mode=$2; shift ;;\n"
             "  esac\n"
             "  shift\n"
             "done\n"
             "touched=$((cpus * pages))\n"
             "echo \"touch: $mode paging, $cpus vCPUs x $pages pages: $touched page faults sent to the VMM\"\n"
             "if [ $mode = shadow ]; then c=" << shadow_cycles << "; else c=" << identity_cycles << "; fi\n"
             "echo \"touch: $c TSC cycles per first touch in all ($((c * touched)) cycles for $touched pages), fastest vCPU $c cycles per page\"\n"
             "if [ $mode = shadow ] && [ " << (fail_shadow ? 1 : 0) << " = 1 ]; then echo 'vmm: guest crashed: triple fault' >&2; exit 126; fi\n"
             "echo \"touch: all $touched pages read back ok (0 discarded by host unmaps)\"\n"
             "[ $mode = shadow ] || exit 0\n"
             "echo \"  faults               $((touched + 2)) (installs $touched, retries 2, no memslot 0)\" >&2\n"
             "echo '  fault service        p50 7000 ns, p99 30000 ns (9 timed)' >&2\n"
             "echo '  shootdowns           0, targets 0 (acknowledged in guest 0, deferred to entry 0)' >&2\n";
        f.close();
        ::chmod(path.c_str(), 0755);
        return path.string();
    }
    std::string calls() const {
        std::ifstream f(dir / "calls");
        return std::string(std::istreambuf_iterator<char>(f), {});
    }
    KvmBenchConfig config(const std::string& vmm_path) const {
        KvmBenchConfig c;
        c.vcpus = {1, 4};
        c.pages = 8;
        c.repeat = 2;
        c.vmm = vmm_path;
        c.guest = (dir / "touch.elf").string();
        c.dev_kvm = (dir / "kvm").string();
        c.sysfs_root = sysfs.root.string();
        return c;
    }
};

} // namespace

TEST_CASE("bench kvm: a shadow touch run's figures are read from the guest's lines and --stats") {
    const TouchRun t = parse_touch_run(kShadowRun);
    CHECK(t.shadow);
    CHECK(t.vcpus == 4);
    CHECK(t.pages == 64);
    CHECK(t.guest_faults == 256);
    CHECK(t.cycles_per_touch == 5210);
    CHECK(t.fastest_vcpu_cycles == 4800);
    CHECK(t.vmm_faults == 260);
    CHECK(t.installs == 258);
    CHECK(t.retries == 2);
    CHECK(t.fault_p50_ns == 8123);
    CHECK(t.fault_p99_ns == 40211);
    CHECK(t.shootdowns == 3);
}

TEST_CASE("bench kvm: an identity touch run needs no shadow statistics") {
    const TouchRun t = parse_touch_run(kIdentityRun);
    CHECK_FALSE(t.shadow);
    CHECK(t.vcpus == 2);
    CHECK(t.pages == 16);
    CHECK(t.cycles_per_touch == 19923);
    CHECK(t.fastest_vcpu_cycles == 35935);
    CHECK(t.vmm_faults == 0);
}

TEST_CASE("bench kvm: output missing a line is refused, naming the line") {
    std::string no_cycles = kIdentityRun;
    no_cycles.erase(no_cycles.find("touch: 19923"), no_cycles.find("touch: all") - no_cycles.find("touch: 19923"));
    CHECK(contains(error_of(no_cycles), "expected the line 'touch: <c> TSC cycles per first touch"));
    std::string not_ok = kIdentityRun;
    not_ok.replace(not_ok.find("touch: all"), 10, "touch: 3 words did not read back");
    CHECK(contains(error_of(not_ok), "expected the line 'touch: all <n> pages read back ok'"));
    std::string no_service = kShadowRun;
    no_service.erase(no_service.find("  fault service"), no_service.find("  zaps") - no_service.find("  fault service"));
    CHECK(contains(error_of(no_service), "fault service p50"));
    CHECK(contains(error_of(""), "expected the line 'touch: <mode> paging"));
}

TEST_CASE("bench kvm: availability follows /dev/kvm and the EPT/NPT module parameter") {
    FakeHost host;
    const KvmAvailability none = kvm_bench_availability((host.dir / "no-kvm").string(), host.sysfs.root.string());
    CHECK_FALSE(none.identity);
    CHECK_FALSE(none.shadow);
    CHECK(contains(none.identity_reason, "cannot open " + (host.dir / "no-kvm").string() + ": No such file"));

    const std::string kvm = (host.dir / "kvm").string();
    const KvmAvailability no_module = kvm_bench_availability(kvm, host.sysfs.root.string());
    CHECK(no_module.identity);
    CHECK_FALSE(no_module.shadow);
    CHECK(contains(no_module.shadow_reason, "found no kvm_intel or kvm_amd module"));

    host.sysfs.param("kvm_amd", "npt", "0\n");
    const KvmAvailability npt_off = kvm_bench_availability(kvm, host.sysfs.root.string());
    CHECK_FALSE(npt_off.shadow);
    CHECK(contains(npt_off.shadow_reason, "kvm_amd with npt=N"));

    host.sysfs.param("kvm_amd", "npt", "1\n");
    CHECK(kvm_bench_availability(kvm, host.sysfs.root.string()).shadow);
}

TEST_CASE("bench kvm: each vCPU count runs identity then shadow, repeated, and compares them") {
    FakeHost host;
    host.sysfs.param("kvm_intel", "ept", "Y\n");
    KvmBenchConfig c = host.config(host.vmm(1000, 2500));
    std::size_t calls = 0;
    c.progress = [&](std::size_t done, std::size_t total, const std::string&) {
        CHECK(total == 4);
        CHECK(done <= total);
        ++calls;
    };
    const BenchReport r = run_kvm_bench(c);
    CHECK(calls == 5);
    REQUIRE(r.rows().size() == 4);
    for (std::size_t i = 0; i < 4; ++i) {
        CHECK(s(r, i, "paging") == (i % 2 ? "shadow" : "identity"));
        CHECK(u(r, i, "vcpus") == (i < 2 ? 1 : 4));
        CHECK(u(r, i, "pages_per_vcpu") == 8);
        CHECK(d(r, i, "cycles_per_touch") == (i % 2 ? 2500 : 1000));
        CHECK(d(r, i, "vs_identity") == doctest::Approx(i % 2 ? 2.5 : 1.0));
    }
    CHECK(s(r, 1, "lock") == "rw");
    CHECK(s(r, 1, "coherence") == "seq");
    CHECK(u(r, 3, "fault_p99_ns") == 30000);
    CHECK(d(r, 3, "retries_per_fault") == doctest::Approx(2.0 / 34));
    // Two repeats of four VMs; the shadow ones sized to the pages touched,
    // the identity ones with at least the default RAM.
    const std::string calls_made = host.calls();
    CHECK(std::count(calls_made.begin(), calls_made.end(), '\n') == 8);
    CHECK(contains(calls_made, "run --stats --cpus 4 --timeout 300 --cmdline pages=8 --paging shadow --lock rw "
                               "--coherence seq --region 128K " + c.guest));
    CHECK(contains(calls_made, "run --stats --cpus 1 --timeout 300 --cmdline pages=8 --mem 128M " + c.guest));
}

TEST_CASE("bench kvm: without EPT/NPT the shadow rows are left out and the reason kept") {
    FakeHost host;
    const BenchReport r = run_kvm_bench(host.config(host.vmm(1000, 2500)));
    REQUIRE(r.rows().size() == 2);
    CHECK(s(r, 0, "paging") == "identity");
    CHECK(s(r, 1, "paging") == "identity");
    CHECK(contains(r.json(), "\"shadow_unavailable\""));
}

TEST_CASE("bench kvm: no /dev/kvm skips, a failing VM and bad settings are errors that say so") {
    FakeHost host;
    host.sysfs.param("kvm_intel", "ept", "Y\n");
    KvmBenchConfig c = host.config(host.vmm(1000, 2500, true));
    try {
        run_kvm_bench(c);
        FAIL("a VM exiting 126 must fail the bench");
    } catch (const std::runtime_error& e) {
        CHECK(contains(e.what(), "exited with status 126"));
        CHECK(contains(e.what(), "vmm: guest crashed: triple fault"));
    }
    c.dev_kvm = (host.dir / "no-kvm").string();
    CHECK_THROWS_AS(run_kvm_bench(c), KvmBenchSkipped);

    KvmBenchConfig bad = host.config(host.vmm(1, 1));
    bad.repeat = 0;
    CHECK_THROWS_WITH_AS(run_kvm_bench(bad), "bench kvm: --repeat must be at least 1, got 0", std::invalid_argument);
    bad = host.config(host.vmm(1, 1));
    bad.vcpus = {2, 1025};
    CHECK_THROWS_WITH_AS(run_kvm_bench(bad), "bench kvm: vCPU counts must be 1..1024, got 1025", std::invalid_argument);
    bad = host.config(host.vmm(1, 1));
    bad.guest = (host.dir / "missing.elf").string();
    CHECK_THROWS_AS(run_kvm_bench(bad), std::invalid_argument);
}

TEST_CASE("run_child: status and interleaved output of a program, signals as 128+N, and a program that is not there") {
    const std::vector<std::string> ok{"/bin/sh", "-c", "echo out; echo err >&2; exit 3"};
    const hv::ChildResult r = hv::run_child(ok);
    CHECK(r.status == 3);
    CHECK(r.output == "out\nerr\n");
    const std::vector<std::string> killed{"/bin/sh", "-c", "kill -9 $$"};
    CHECK(hv::run_child(killed).status == 128 + 9);
    const std::vector<std::string> missing{"/nonexistent/prog"};
    CHECK_THROWS_WITH_AS(hv::run_child(missing), "cannot start /nonexistent/prog: No such file or directory",
                         hv::VmmError);
}
