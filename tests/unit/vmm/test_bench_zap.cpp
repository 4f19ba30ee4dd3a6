// `vmm bench zap` measures what its rows say: one lock hold per `batch`
// entries for a range unmap, one per entry page by page, one shootdown per
// hold (one vCPU installed everything), and every page of the range zapped.
#include "tests/support/bench_cells.hpp"
#include "vmm/bench/bench_zap.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <stdexcept>

using namespace hv::bench;

using bench_cells::d;
using bench_cells::s;
using bench_cells::u;

TEST_CASE("bench zap: lock holds, entries per hold and shootdowns follow the batch size") {
    ZapBenchConfig c;
    c.sizes = {std::uint64_t{4} << 20}; // 1024 pages, two leaf tables
    c.batches = {1, 64, 0};
    c.repeat = 2;
    c.linux_baseline = false;
    std::size_t last_done = 0, calls = 0;
    c.progress = [&](std::size_t done, std::size_t total, const std::string&) {
        CHECK(total == 28); // 14 configurations x 2 repeats, interleaved
        CHECK(done >= last_done);
        last_done = done;
        ++calls;
    };
    const BenchReport r = run_zap_bench(c);
    // none x3 calls, shadow range x3 batches, shadow page, shadow protect,
    // shadow guest x3 batches, external-tlb range and page, shadow-global page.
    REQUIRE(r.rows().size() == 14);
    CHECK(calls == 29);
    CHECK(last_done == 28);
    for (std::size_t i = 0; i < r.rows().size(); ++i) {
        CHECK(u(r, i, "pages") == 1024);
        CHECK(s(r, i, "size") == "4M");
        CHECK(d(r, i, "ns_min") <= d(r, i, "ns_per_page"));
        CHECK(d(r, i, "ns_per_page") <= d(r, i, "ns_max"));
        // A subscriber's own share: only for subscriber rows (the host's
        // work alone is the `none` row of the same call).
        CHECK(std::isfinite(d(r, i, "own_ns_per_page")) == (s(r, i, "subscriber") != "none"));
    }
    for (std::size_t i = 0; i < 3; ++i) {
        CHECK(s(r, i, "subscriber") == "none");
        CHECK(u(r, i, "holds") == 0);
    }
    CHECK(s(r, 2, "call") == "protect");
    const struct {
        std::size_t row;
        const char* subscriber;
        const char* call;
        const char* batch;
        std::uint64_t holds, shootdowns;
        double locks_per_page, shared_atomics_per_page;
    } rows[] = {
        // Rw: one writer-lock hold per batch (its own mutex, no reader's line).
        {3, "shadow", "range", "1", 1024, 1024, 1.0, 0.0},
        {4, "shadow", "range", "64", 16, 16, 16.0 / 1024, 0.0},
        {5, "shadow", "range", "all", 1, 1, 1.0 / 1024, 0.0},
        {6, "shadow", "page", "-", 1024, 1024, 1.0, 0.0},
        // The first protect drops all 1024 entries in batches of 512 (two
        // holds); the second takes the lock once and finds none.
        {7, "shadow", "protect", "512", 2, 2, 3.0 / 1024, 0.0},
        // The shadow MMU alone, no host call: the same holds as a range unmap.
        {8, "shadow", "guest", "1", 1024, 1024, 1.0, 0.0},
        {9, "shadow", "guest", "64", 16, 16, 16.0 / 1024, 0.0},
        {10, "shadow", "guest", "all", 1, 1, 1.0 / 1024, 0.0},
        // One flush call (device write) per range start, one TLB lock each;
        // the range-active counter: 2 shared RMWs per range pair.
        {11, "external-tlb", "range", "-", 1, 0, 1.0 / 1024, 2.0 / 1024},
        {12, "external-tlb", "page", "-", 1024, 0, 1.0, 0.0},
        // The 2008 baseline: the global mutex once per page, 2 shared RMWs each.
        {13, "shadow-global", "page", "-", 1024, 1024, 1.0, 2.0},
    };
    for (const auto& e : rows) {
        CAPTURE(e.row);
        CHECK(s(r, e.row, "subscriber") == e.subscriber);
        CHECK(s(r, e.row, "call") == e.call);
        CHECK(s(r, e.row, "batch") == e.batch);
        CHECK(u(r, e.row, "holds") == e.holds);
        CHECK(u(r, e.row, "shootdowns") == e.shootdowns);
        CHECK(d(r, e.row, "entries_per_hold") == doctest::Approx(1024.0 / static_cast<double>(e.holds)));
        CHECK(d(r, e.row, "locks_per_page") == doctest::Approx(e.locks_per_page));
        CHECK(d(r, e.row, "shared_atomics_per_page") == doctest::Approx(e.shared_atomics_per_page));
    }
}

TEST_CASE("bench zap: the Linux rows make one call per 4 KiB or per 2 MiB chunk") {
    ZapBenchConfig c;
    c.sizes = {std::uint64_t{2} << 20};
    c.batches = {512};
    c.repeat = 1;
    const BenchReport r = run_zap_bench(c);
    REQUIRE(r.rows().size() == 15); // 10 of ours, then Linux's
    const struct {
        std::size_t row;
        const char* call;
        std::uint64_t calls;
    } rows[] = {{10, "madvise-4k", 512},
                {11, "madvise-2m", 1},
                {12, "munmap-4k", 512},
                {13, "munmap-2m", 1},
                {14, "mprotect", 2}}; // the whole range read-only, then writable again
    for (const auto& e : rows) {
        CAPTURE(e.call);
        CHECK(s(r, e.row, "subscriber") == "linux");
        CHECK(s(r, e.row, "call") == e.call);
        CHECK(u(r, e.row, "holds") == e.calls);
        CHECK(u(r, e.row, "pages") == 512);
    }
}

TEST_CASE("bench zap: sizes that are not multiples of 2 MiB, and repeat 0, are refused") {
    ZapBenchConfig c;
    c.sizes = {3u << 20};
    CHECK_THROWS_WITH_AS(run_zap_bench(c),
                         "bench zap: sizes must be positive multiples of 2 MiB up to 4 GiB, got 3145728 bytes",
                         std::invalid_argument);
    c.sizes = {2u << 20};
    c.repeat = 0;
    CHECK_THROWS_WITH_AS(run_zap_bench(c), "bench zap: --repeat must be at least 1, got 0", std::invalid_argument);
}
