// hv::run_stats_text and hv::run_report_json: what `vmm run --stats` prints
// and `--json FILE` writes, from a hand-filled report.
#include <doctest/doctest.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "tests/support/text_match.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/run/run_report.hpp"
#include "vmm/run/vm.hpp"

using hv::test::contains;

namespace {

hv::RunReport sample() {
    hv::RunOptions opt;
    opt.image = "build/guest/pc/smpboot.elf";
    opt.cpus = 4;
    opt.mem = 64ull << 20;
    hv::RunReport r = hv::base_report(opt);
    r.image_kind = "multiboot";
    r.end = {hv::StopReason::DebugExit, 1, "guest wrote 1 to the debug-exit port"};
    r.guest_exit_code = 1;
    r.first_output_ms = 12.5;
    r.total_ms = 40.25;
    r.exits[static_cast<int>(hv::ExitKind::Io)] = 100;
    r.exits[static_cast<int>(hv::ExitKind::Mmio)] = 3;
    r.peak_rss_kib = 9000;
    r.vcpus_rss_kib = 40;
    r.never_started = {2, 3};
    return r;
}

} // namespace

TEST_CASE("run_stats_text: times, vCPUs that never started, exits by reason, RSS") {
    const std::string t = hv::run_stats_text(sample());
    CHECK(contains(t, "vmm stats:\n"));
    CHECK(contains(t, "  first guest output   12.500 ms\n"));
    CHECK(contains(t, "  total run time       40.250 ms\n"));
    CHECK(contains(t, "  vcpus                4\n"));
    CHECK(contains(t, "  vcpus never started  2 (waiting for INIT/SIPI: vcpu 2-3)\n"));
    CHECK(contains(t, "  exits                103\n    io                 100\n    mmio               3\n"));
    CHECK(contains(t, "  vmm peak rss         9000 KiB\n"));
    CHECK(contains(t, "  vmm rss per vcpu     10.0 KiB"));
    hv::RunReport quiet = sample();
    quiet.first_output_ms.reset();
    quiet.never_started.clear();
    const std::string q = hv::run_stats_text(quiet);
    CHECK(contains(q, "  first guest output   none\n"));
    CHECK(!contains(q, "never started"));
}

TEST_CASE("run_report_json: how the run ended, with the guest's exit code") {
    const std::string j = hv::run_report_json(sample());
    CHECK(contains(j, "\"image\": \"build/guest/pc/smpboot.elf\""));
    CHECK(contains(j, "\"image_kind\": \"multiboot\""));
    CHECK(contains(j, "\"platform\": \"pc\""));
    CHECK(contains(j, "\"paging\": \"identity\""));
    CHECK(contains(j, "\"cpus\": 4"));
    CHECK(contains(j, "\"mem_bytes\": 67108864"));
    CHECK(contains(j, "\"end\": {\"reason\": \"debug-exit\", \"exit_status\": 1, \"message\": \"guest wrote 1 to the "
                      "debug-exit port\", \"guest_exit_code\": 1}"));
    CHECK(contains(j, "\"first_output_ms\": 12.500"));
    CHECK(contains(j, "\"total_ms\": 40.250"));
    CHECK(contains(j, "\"exits\": {\"total\": 103, \"io\": 100, \"mmio\": 3, \"hlt\": 0"));
    CHECK(contains(j, "\"vmm_peak_rss_kib\": 9000"));
    CHECK(contains(j, "\"vcpus_never_started\": [2, 3]"));
    CHECK(contains(j, "\"shadow\": false"));
}

TEST_CASE("run_report_json: a timeout, a crash and a run that never started") {
    hv::RunReport r = sample();
    r.guest_exit_code.reset();
    r.first_output_ms.reset();
    r.end = {hv::StopReason::Timeout, 124, "timeout: the guest ran longer than --timeout 1 s"};
    std::string j = hv::run_report_json(r);
    CHECK(contains(j, "\"reason\": \"timeout\", \"exit_status\": 124"));
    CHECK(contains(j, "\"guest_exit_code\": null"));
    CHECK(contains(j, "\"first_output_ms\": null"));
    r.end = {hv::StopReason::GuestCrash, 126, "triple fault \"quoted\"\n"};
    j = hv::run_report_json(r);
    CHECK(contains(j, "\"reason\": \"guest-crash\", \"exit_status\": 126, \"message\": \"triple fault \\\"quoted\\\"\\n\""));

    hv::RunOptions opt;
    opt.image = "missing.elf";
    hv::RunReport early = hv::base_report(opt);
    early.end = {hv::StopReason::VmmFailure, 125, "cannot open image"};
    j = hv::run_report_json(early);
    CHECK(contains(j, "\"image_kind\": null"));
    CHECK(contains(j, "\"reason\": \"vmm-error\", \"exit_status\": 125"));
    CHECK(contains(j, "\"exits\": {\"total\": 0"));
}

TEST_CASE("write_run_report: writes the file, and names a path it cannot write") {
    const auto dir = std::filesystem::temp_directory_path() / "hv-run-report-test";
    std::filesystem::create_directories(dir);
    const auto path = (dir / "run.json").string();
    hv::write_run_report(path, sample());
    std::ifstream f(path);
    std::stringstream text;
    text << f.rdbuf();
    CHECK(text.str() == hv::run_report_json(sample()));
    CHECK(!std::filesystem::exists(path + ".partial")); // written beside, then renamed
    std::filesystem::remove_all(dir);
    try {
        hv::write_run_report("/nonexistent/dir/run.json", sample());
        FAIL("expected a VmmError");
    } catch (const hv::VmmError& e) {
        CHECK(std::string(e.what()) == "--json: cannot write '/nonexistent/dir/run.json': No such file or directory");
    }
}
