// `vmm bench zap` measures what its rows say: one lock hold per `batch`
// entries for a range unmap, one per entry page by page, one shootdown per
// hold (one vCPU installed everything), and every page of the range zapped.
#include "bench_cells.hpp"
#include "bench_zap.hpp"

#include <doctest/doctest.h>

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
        CHECK(total == 6);
        CHECK(done >= last_done);
        last_done = done;
        ++calls;
    };
    const BenchReport r = run_zap_bench(c);
    REQUIRE(r.rows().size() == 6); // none range, none page, shadow x3 batches, shadow page
    CHECK(calls == 7);
    CHECK(last_done == 6);
    for (std::size_t i = 0; i < r.rows().size(); ++i) {
        CHECK(u(r, i, "pages") == 1024);
        CHECK(s(r, i, "size") == "4M");
        CHECK(d(r, i, "ns_min") <= d(r, i, "ns_per_page"));
        CHECK(d(r, i, "ns_per_page") <= d(r, i, "ns_max"));
    }
    CHECK(s(r, 0, "subscriber") == "none");
    CHECK(u(r, 0, "holds") == 0);
    const struct {
        std::size_t row;
        const char* batch;
        std::uint64_t holds;
    } shadow[] = {{2, "1", 1024}, {3, "64", 16}, {4, "all", 1}, {5, "-", 1024}};
    for (const auto& e : shadow) {
        CAPTURE(e.row);
        CHECK(s(r, e.row, "subscriber") == "shadow");
        CHECK(s(r, e.row, "batch") == e.batch);
        CHECK(u(r, e.row, "holds") == e.holds);
        CHECK(u(r, e.row, "shootdowns") == e.holds);
        CHECK(d(r, e.row, "entries_per_hold") == doctest::Approx(1024.0 / static_cast<double>(e.holds)));
    }
    CHECK(s(r, 5, "call") == "page");
}

TEST_CASE("bench zap: the Linux rows make one call per 4 KiB or per 2 MiB chunk") {
    ZapBenchConfig c;
    c.sizes = {std::uint64_t{2} << 20};
    c.batches = {512};
    c.repeat = 1;
    const BenchReport r = run_zap_bench(c);
    REQUIRE(r.rows().size() == 8);
    const struct {
        std::size_t row;
        const char* call;
        std::uint64_t calls;
    } rows[] = {{4, "madvise-4k", 512}, {5, "madvise-2m", 1}, {6, "munmap-4k", 512}, {7, "munmap-2m", 1}};
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
