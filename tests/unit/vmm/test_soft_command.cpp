// `vmm soft`: argument validation (one-line errors), CLI wiring, the summary
// and the JSON report.
#include "tests/support/text_match.hpp"
#include "vmm/cli/soft_command.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <CLI/CLI.hpp>
#include <doctest/doctest.h>

#include <cstdio>
#include <unistd.h>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

using namespace hv;
using hv::test::message_of;

namespace {

std::string error_of(const SoftCommandArgs& a) {
    return message_of<VmmError>([&] { parse_soft_args(a); });
}

SoftCommandArgs with(std::string SoftCommandArgs::*field, std::string value) {
    SoftCommandArgs a;
    a.*field = std::move(value);
    return a;
}

} // namespace

TEST_CASE("vmm soft: defaults") {
    const SoftCommandOptions o = parse_soft_args({});
    CHECK(o.run.vcpus == 4);
    CHECK(o.run.seconds == 2.0);
    CHECK(o.run.ops_per_vcpu == 0);
    CHECK(o.run.pattern == mmu::AccessPattern::Random);
    CHECK(o.run.sharing == mmu::Sharing::Disjoint);
    CHECK(o.run.write_fraction == doctest::Approx(0.3));
    CHECK(o.run.pages == 256);
    CHECK(o.run.tlb.entries == 64);
    CHECK(o.run.tlb.model == mmu::TlbModel::Recheck);
    CHECK(o.shadow.lock == mmu::LockPolicy::Rw);
    CHECK(o.shadow.coherence == mmu::CoherencePolicy::Seq);
    CHECK(o.shadow.batch == 512);
    CHECK(o.run.seed == 1);
    CHECK(o.frames == 0);
    for (double r : o.run.churn_rate) CHECK(r == 0);
    // The software vCPUs' own churn and the device are on unless turned off.
    CHECK(o.run.soft_churn.rate[static_cast<std::size_t>(mmu::SoftChurnOp::Memslot)] == 20);
    CHECK(o.run.soft_churn.rate[static_cast<std::size_t>(mmu::SoftChurnOp::ZeroMerge)] == 200);
    CHECK(o.run.soft_churn.rate[static_cast<std::size_t>(mmu::SoftChurnOp::Range)] == 20);
    CHECK(o.run.device_rate == 20000);
    CHECK(o.run.memslots == 4);
    CHECK(o.run.time_limit == 0);
    CHECK(parse_soft_args(with(&SoftCommandArgs::pages, "2")).run.memslots == 4); // 4 vCPUs x 2 pages
    SoftCommandArgs one_page;
    one_page.vcpus = "1";
    one_page.pages = "1";
    CHECK(parse_soft_args(one_page).run.memslots == 1); // the default shrinks to the region
}

TEST_CASE("vmm soft: the churn, device, memslot and time-limit options") {
    SoftCommandArgs a;
    a.churn_memslot = "5";
    a.churn_zero_merge = "0";
    a.churn_range = "7.5";
    a.external_tlb = "0";
    a.memslots = "64";
    a.time_limit = "30";
    const SoftCommandOptions o = parse_soft_args(a);
    CHECK(o.run.soft_churn.rate[0] == 5);
    CHECK(o.run.soft_churn.rate[1] == 0);
    CHECK(o.run.soft_churn.rate[2] == doctest::Approx(7.5));
    CHECK(o.run.device_rate == 0);
    CHECK(o.run.memslots == 64);
    CHECK(o.run.time_limit == 30);
    using A = SoftCommandArgs;
    CHECK(error_of(with(&A::churn_memslot, "x")) ==
          "--churn-memslot must be memslot removals per second in 0..10000000 (0 = off), got 'x'");
    CHECK(error_of(with(&A::churn_zero_merge, "-1")).find("--churn-zero-merge must be zero-page merges") == 0);
    CHECK(error_of(with(&A::churn_range, "inf")).find("--churn-range must be range operations") == 0);
    CHECK(error_of(with(&A::external_tlb, "1e8")).find("--external-tlb must be device translations") == 0);
    CHECK(error_of(with(&A::memslots, "0")) == "--memslots must be 1..64, got '0'");
    CHECK(error_of(with(&A::memslots, "65")) == "--memslots must be 1..64, got '65'");
    SoftCommandArgs tiny;
    tiny.vcpus = "1";
    tiny.pages = "3";
    tiny.memslots = "4";
    CHECK(error_of(tiny) == "--memslots: expected at most one memslot per region page (3 pages), got 4");
    CHECK(error_of(with(&A::time_limit, "0")) == "--time-limit must be a number of seconds in (0, 172800], got '0'");
    CHECK(error_of(with(&A::time_limit, "2")) == "--time-limit must be more than the run's --seconds (2), got '2'");
    SoftCommandArgs bounded;
    bounded.ops = "10";
    bounded.time_limit = "1";
    CHECK(error_of(bounded).empty()); // --ops runs have no --seconds to exceed
}

TEST_CASE("vmm soft: every value is parsed") {
    SoftCommandArgs a;
    a.vcpus = "1024";
    a.ops = "50";
    a.pattern = "seq";
    a.sharing = "shared";
    a.writes = "1";
    a.pages = "100";
    a.tlb = "16";
    a.tlb_model = "hardware";
    a.lock = "split";
    a.coherence = "range-active";
    a.batch = "0";
    a.churn = "migrate=2000,unmap=500,protect=500,merge=200,swap=500,age=200.5";
    a.seed = "7";
    a.frames = "100000";
    a.json = "out.json";
    const SoftCommandOptions o = parse_soft_args(a);
    CHECK(o.run.vcpus == 1024);
    CHECK(o.shadow.vcpus == 1024);
    CHECK(o.run.ops_per_vcpu == 50);
    CHECK(o.run.pattern == mmu::AccessPattern::Sequential);
    CHECK(o.run.sharing == mmu::Sharing::Shared);
    CHECK(o.run.region_pages() == 100);
    CHECK(o.run.tlb.entries == 16);
    CHECK(o.run.tlb.model == mmu::TlbModel::Hardware);
    CHECK(o.shadow.lock == mmu::LockPolicy::Split);
    CHECK(o.shadow.coherence == mmu::CoherencePolicy::RangeActive);
    CHECK(o.shadow.batch == 0);
    CHECK(o.run.churn_rate[0] == 2000);
    CHECK(o.run.churn_rate[5] == doctest::Approx(200.5));
    CHECK(o.run.seed == 7);
    CHECK(o.frames == 100000);
    CHECK(o.json == "out.json");
    CHECK(parse_soft_args(with(&SoftCommandArgs::coherence, "ptlock")).shadow.coherence == mmu::CoherencePolicy::PtLock);
    CHECK(parse_soft_args(with(&SoftCommandArgs::lock, "global")).shadow.lock == mmu::LockPolicy::Global);
    CHECK(parse_soft_args(with(&SoftCommandArgs::batch, "64")).shadow.batch == 64);
}

TEST_CASE("vmm soft: bad values give one-line errors") {
    using A = SoftCommandArgs;
    CHECK(error_of(with(&A::vcpus, "0")) == "--vcpus must be 1..1024, got 0");
    CHECK(error_of(with(&A::vcpus, "1025")) == "--vcpus must be 1..1024, got 1025");
    CHECK(error_of(with(&A::vcpus, "four")) == "--vcpus must be 1..1024, got four");
    CHECK(error_of(with(&A::churn, "foo=1")) ==
          "--churn: unknown operation 'foo' (expected migrate, unmap, protect, merge, swap or age)");
    CHECK(error_of(with(&A::churn, "migrate")).find("expected OP=RATE") != std::string::npos);
    CHECK(error_of(with(&A::churn, "migrate=-1")).find("migrate rate") != std::string::npos);
    CHECK(error_of(with(&A::churn, "migrate=1,migrate=2")).find("twice") != std::string::npos);
    CHECK(error_of(with(&A::churn, "migrate=1,")).find("--churn") == 0);
    CHECK(error_of(with(&A::batch, "x")).find("--batch: expected") == 0);
    CHECK(error_of(with(&A::batch, "-1")).find("or 0 for unlimited") != std::string::npos);
    CHECK(error_of(with(&A::pattern, "zigzag")) == "--pattern: expected seq or random, got 'zigzag'");
    CHECK(error_of(with(&A::sharing, "both")) == "--sharing: expected disjoint or shared, got 'both'");
    CHECK(error_of(with(&A::writes, "1.5")).find("--writes must be a fraction 0..1") == 0);
    CHECK(error_of(with(&A::writes, "")) == "");
    CHECK(error_of(with(&A::seconds, "0")).find("--seconds") == 0);
    CHECK(error_of(with(&A::seconds, "abc")).find("--seconds") == 0);
    CHECK(error_of(with(&A::ops, "0")).find("--ops") == 0);
    CHECK(error_of(with(&A::pages, "0")).find("--pages") == 0);
    CHECK(error_of(with(&A::tlb, "0")).find("--tlb") == 0);
    CHECK(error_of(with(&A::tlb_model, "cpu")) == "--tlb-model: expected recheck or hardware, got 'cpu'");
    CHECK(error_of(with(&A::lock, "mutex")) == "--lock: expected global, rw or split, got 'mutex'");
    CHECK(error_of(with(&A::coherence, "none")) == "--coherence: expected seq, ptlock or range-active, got 'none'");
    CHECK(error_of(with(&A::seed, "-3")).find("--seed") == 0);
    CHECK(error_of(with(&A::frames, "10")).find("--frames") == 0);
    SoftCommandArgs both;
    both.seconds = "1";
    both.ops = "10";
    CHECK(error_of(both).find("--seconds and --ops") == 0);
    SoftCommandArgs huge;
    huge.vcpus = "1024";
    huge.pages = "100000";
    CHECK(error_of(huge).find("--pages") == 0);
}

TEST_CASE("vmm soft: the CLI subcommand stores what is typed") {
    CLI::App app;
    SoftCommandArgs a;
    auto* soft = add_soft_subcommand(app, a);
    std::vector<std::string> argv = {"migrate=5", "--churn", "split", "--lock", "10", "--ops", "1", "--vcpus", "soft"};
    app.parse(argv); // CLI11 takes the arguments reversed
    CHECK(soft->parsed());
    CHECK(a.vcpus == "1");
    CHECK(a.ops == "10");
    CHECK(a.lock == "split");
    CHECK(a.churn == "migrate=5");
    CHECK(parse_soft_args(a).run.vcpus == 1);
}

TEST_CASE("vmm soft: a short run prints the summary and writes JSON with the required keys (both TLB models)") {
    for (const char* model : {"recheck", "hardware"}) {
        CAPTURE(model);
        SoftCommandArgs a;
        a.tlb_model = model;
        a.vcpus = "4";
        a.ops = "300";
        a.pages = "16";
        a.churn = "migrate=5000,unmap=2000,protect=2000,merge=1000,swap=2000,age=1000";
        const std::string path = "/tmp/hv_test_soft_command_" + std::to_string(::getpid()) + ".json";
        a.json = path;
        const SoftCommandOptions o = parse_soft_args(a);
        std::FILE* out = std::tmpfile();
        REQUIRE(out);
        const int status = run_soft_command(o, out);
        std::rewind(out);
        std::string summary;
        for (int ch; (ch = std::fgetc(out)) != EOF;) summary += static_cast<char>(ch);
        std::fclose(out);
        CHECK(status == 0);
        CHECK(summary.find("faults/s") != std::string::npos);
        CHECK(summary.find("zaps per lock hold") != std::string::npos);
        CHECK(summary.find("result: ok") != std::string::npos);
        for (const char* label : {"churn memslot (removed/attempted)", "churn zero-merge (merged/attempted)",
                                  "churn range (done/attempted)", "accesses with no memslot (removed)",
                                  "copy-on-write breaks (host)", "zap batches resumed mid-range",
                                  "device translations (ok/attempted)", "external TLB invalidations",
                                  "time limit reached                 false"})
            CHECK_MESSAGE(summary.find(label) != std::string::npos, label);
        std::ifstream f(path);
        REQUIRE(f);
        std::stringstream ss;
        ss << f.rdbuf();
        const std::string json = ss.str();
        std::remove(path.c_str());
        for (const char* key : {"faults", "retries", "zaps", "batches", "shootdowns", "lost_writes", "violations",
                                "faults_per_second", "zaps_per_lock_hold", "shootdown_targets",
                                "lock_acquisitions_per_fault", "shared_atomics_per_fault", "churn_migrate",
                                "audit_problems", "vcpus", "lock", "coherence", "batch", "tlb_model", "seconds",
                                "churn_memslot", "churn_memslot_attempted", "churn_zero_merge", "churn_range",
                                "memslot_readds", "no_memslot", "cow_breaks", "range_pages", "range_crossings",
                                "resumed_batches", "external_tlb_rate", "device_translations",
                                "external_tlb_invalidations", "external_tlb_entries_dropped", "shootdown_abandoned",
                                "timed_out"})
            CHECK_MESSAGE(json.find("\"" + std::string(key) + "\": ") != std::string::npos, key);
        CHECK(json.front() == '{');
        CHECK(json.find("\"tlb_model\": \"" + std::string(model) + "\"") != std::string::npos);
        CHECK(json.find("\"lost_writes\": 0,") != std::string::npos);
        CHECK(json.find("\"ok\": true") != std::string::npos);
        CHECK(json.find("\"timed_out\": false,") != std::string::npos);
    }
}
