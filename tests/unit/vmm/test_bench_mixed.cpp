// `vmm bench mixed` reports what its threads did: an idle row and one row
// per zap batch, faults counted only while zaps run (and every one when
// idle), the zaps' lock holds following the batch and the lock policy, and
// no retries when nothing invalidates. No timing is asserted.
#include "tests/support/bench_cells.hpp"
#include "vmm/bench/bench_mixed.hpp"

#include <doctest/doctest.h>

#include <stdexcept>

using namespace hv::bench;
using hv::mmu::CoherencePolicy;
using hv::mmu::LockPolicy;

using bench_cells::d;
using bench_cells::s;
using bench_cells::u;

namespace {

// Tiny: one or two leaf tables zapped, a few dozen faults per measurement.
MixedBenchConfig tiny(std::uint64_t size_mib) {
    MixedBenchConfig c;
    c.size = size_mib << 20;
    c.coherences = {CoherencePolicy::Seq};
    c.repeat = 1;
    c.samples = 40;
    c.min_zaps = 2;
    return c;
}

// The stopping rule, as the rows show it: every measurement ran min_zaps
// zaps and then had its samples or spent its zap budget.
void check_stopping_rule(const BenchReport& r, std::size_t row, const MixedBenchConfig& c) {
    const std::uint64_t zaps = u(r, row, "zaps"), pages = u(r, row, "zap_pages");
    CHECK(zaps >= std::uint64_t{c.min_zaps} * c.repeat);
    CHECK((u(r, row, "faults") >= c.samples * c.repeat || zaps * pages >= c.zap_budget * c.repeat));
    CHECK(u(r, row, "faults") > 0);
    CHECK(u(r, row, "zaps_preempted") <= zaps);
    CHECK(u(r, row, "faults_preempted") <= u(r, row, "faults"));
}

} // namespace

TEST_CASE("bench mixed: an idle row and one per batch, faults counted only during zaps, one lock hold per batch") {
    MixedBenchConfig c = tiny(2); // 512 pages: one leaf table
    c.batches = {1, 64, 0};
    c.locks = {LockPolicy::Rw};
    c.repeat = 2;
    std::size_t last_done = 0, calls = 0;
    c.progress = [&](std::size_t done, std::size_t total, const std::string&) {
        CHECK(total == 8); // (idle + 3 batches) x 2 repeats
        CHECK(done >= last_done);
        last_done = done;
        ++calls;
    };
    const BenchReport r = run_mixed_bench(c);
    REQUIRE(r.rows().size() == 4);
    CHECK(calls == 9);
    CHECK(last_done == 8);

    CHECK(s(r, 0, "zap_batch") == "idle");
    CHECK(u(r, 0, "faults") == 80); // every fault counts: samples x repeats
    CHECK(d(r, 0, "p99_vs_idle") == 1.0);
    CHECK(u(r, 0, "zap_pages") == 0);
    CHECK(u(r, 0, "zaps") == 0);
    CHECK(u(r, 0, "zaps_preempted") == 0);
    CHECK(u(r, 0, "faults_preempted") <= 80);
    CHECK(d(r, 0, "fault_retries_per_fault") == 0.0); // one fault thread, nothing invalidates its pages

    const struct {
        const char* batch;
        double per_hold;
    } rows[] = {{"1", 1}, {"64", 64}, {"all", 512}};
    for (std::size_t i = 0; i < r.rows().size(); ++i) {
        CAPTURE(i);
        CHECK(s(r, i, "lock") == "rw");
        CHECK(s(r, i, "coherence") == "seq");
        CHECK(d(r, i, "fault_p50_ns") <= d(r, i, "fault_p99_ns"));
        CHECK(d(r, i, "fault_p99_ns") <= d(r, i, "fault_max_ns"));
        CHECK(d(r, i, "locks_per_fault") >= 1.0); // the reader lock at least
        if (i == 0) continue;
        const auto& e = rows[i - 1];
        CHECK(s(r, i, "zap_batch") == e.batch);
        CHECK(u(r, i, "zap_pages") == 512);
        check_stopping_rule(r, i, c);
        CHECK(d(r, i, "zap_entries_per_hold") == doctest::Approx(e.per_hold));
        // One policy lock per hold; the rmap's locks, if counted, add at most one per entry.
        CHECK(d(r, i, "locks_per_zap_page") >= doctest::Approx(1.0 / e.per_hold));
        CHECK(d(r, i, "locks_per_zap_page") <= doctest::Approx(1.0 / e.per_hold + 1.0));
        CHECK(d(r, i, "zap_ns_per_page") > 0);
        CHECK(d(r, i, "p99_vs_idle") > 0);
    }
}

TEST_CASE("bench mixed: unlimited batches hold the whole range under global, one leaf table under split") {
    MixedBenchConfig c = tiny(4); // 1024 pages: two leaf tables
    c.batches = {0};
    c.locks = {LockPolicy::Split, LockPolicy::Global};
    c.fault_threads = 2;
    const BenchReport r = run_mixed_bench(c);
    REQUIRE(r.rows().size() == 4);
    const struct {
        const char* lock;
        const char* batch;
        double per_hold;
    } rows[] = {{"split", "idle", 0}, {"split", "all", 512}, {"global", "idle", 0}, {"global", "all", 1024}};
    for (std::size_t i = 0; i < r.rows().size(); ++i) {
        CAPTURE(i);
        const auto& e = rows[i];
        CHECK(s(r, i, "lock") == e.lock);
        CHECK(s(r, i, "zap_batch") == e.batch);
        CHECK(d(r, i, "zap_entries_per_hold") == doctest::Approx(e.per_hold));
        if (e.per_hold == 0) {
            CHECK(u(r, i, "faults") == 40); // 20 from each fault thread
            CHECK(d(r, i, "p99_vs_idle") == 1.0);
        } else {
            CHECK(u(r, i, "zap_pages") == 1024);
            check_stopping_rule(r, i, c);
        }
    }
}

TEST_CASE("bench mixed: bad sizes, thread counts, empty sweeps and zero counts are refused") {
    MixedBenchConfig c;
    c.size = 3u << 20;
    CHECK_THROWS_WITH_AS(run_mixed_bench(c),
                         "bench mixed: the size must be a positive multiple of 2 MiB up to 4 GiB, got 3145728 bytes",
                         std::invalid_argument);
    c.size = std::uint64_t{8} << 30;
    CHECK_THROWS_AS(run_mixed_bench(c), std::invalid_argument);
    c.size = 2u << 20;
    c.fault_threads = 65;
    CHECK_THROWS_WITH_AS(run_mixed_bench(c), "bench mixed: fault threads must be 1..64, got 65", std::invalid_argument);
    c.fault_threads = 0;
    CHECK_THROWS_AS(run_mixed_bench(c), std::invalid_argument);
    c.fault_threads = 1;
    c.batches = {};
    CHECK_THROWS_WITH_AS(run_mixed_bench(c), "bench mixed: expected at least one zap batch size, got none",
                         std::invalid_argument);
    c.batches = {512};
    c.locks = {};
    CHECK_THROWS_WITH_AS(run_mixed_bench(c), "bench mixed: expected at least one lock policy, got none",
                         std::invalid_argument);
    c.locks = {LockPolicy::Rw};
    c.repeat = 0;
    CHECK_THROWS_WITH_AS(run_mixed_bench(c), "bench mixed: --repeat must be at least 1, got 0", std::invalid_argument);
    c.repeat = 1;
    c.samples = 0;
    CHECK_THROWS_WITH_AS(run_mixed_bench(c), "bench mixed: samples must be at least 1, got 0", std::invalid_argument);
}
