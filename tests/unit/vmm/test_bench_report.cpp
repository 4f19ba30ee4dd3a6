// BenchReport: the table, JSON and CSV a `vmm bench` experiment writes, and
// the median/range summary of repeated measurements.
#include "vmm/bench/bench_report.hpp"

#include <doctest/doctest.h>

#include <limits>
#include <stdexcept>

using namespace hv::bench;

namespace {

BenchReport sample() {
    BenchReport r("zap", {{"who"}, {"pages"}, {"ns", 2}});
    r.set_meta("machine", "test box");
    r.add_row({std::string("shadow"), std::uint64_t{512}, 43.785});
    r.add_row({std::string("linux \"x\", y"), std::uint64_t{16384}, 1875.2});
    return r;
}

} // namespace

TEST_CASE("BenchReport: the table aligns text left and numbers right, doubles at the column's precision") {
    const std::string t = sample().table();
    CHECK(t ==
          "who           pages       ns\n"
          "shadow          512    43.78\n"
          "linux \"x\", y  16384  1875.20\n");
}

TEST_CASE("BenchReport: JSON carries the experiment, the metadata and every row, strings escaped") {
    const std::string j = sample().json();
    CHECK(j.find("\"experiment\": \"zap\"") != std::string::npos);
    CHECK(j.find("\"meta\": {\"machine\": \"test box\"}") != std::string::npos);
    CHECK(j.find("\"columns\": [\"who\", \"pages\", \"ns\"]") != std::string::npos);
    CHECK(j.find("{\"who\": \"shadow\", \"pages\": 512, \"ns\": 43.78") != std::string::npos);
    CHECK(j.find("{\"who\": \"linux \\\"x\\\", y\", \"pages\": 16384, \"ns\": 1875.2") != std::string::npos);
    BenchReport nan("x", {{"v"}});
    nan.add_row({Cell{std::numeric_limits<double>::quiet_NaN()}});
    CHECK(nan.json().find("{\"v\": null}") != std::string::npos);
}

TEST_CASE("BenchReport: CSV has a header and quotes fields with commas or quotes") {
    CHECK(sample().csv() == "who,pages,ns\nshadow,512,43.784999999999997\n\"linux \"\"x\"\", y\",16384,1875.2\n");
}

TEST_CASE("BenchReport: a row of the wrong width and an unknown column are refused") {
    BenchReport r = sample();
    CHECK_THROWS_WITH_AS(r.add_row({std::string("short")}), "bench report 'zap': expected 3 cells in a row, got 1",
                         std::invalid_argument);
    CHECK(std::get<std::uint64_t>(r.at(1, "pages")) == 16384);
    CHECK_THROWS_AS(r.at(0, "nope"), std::out_of_range);
    CHECK_THROWS_AS(r.at(5, "pages"), std::out_of_range);
}

TEST_CASE("summarize: median of odd and even counts, range, and no samples refused") {
    const Summary odd = summarize({5, 1, 3});
    CHECK(odd.median == 3);
    CHECK(odd.min == 1);
    CHECK(odd.max == 5);
    CHECK(summarize({4, 1, 3, 2}).median == 2.5);
    CHECK_THROWS_AS(summarize({}), std::invalid_argument);
}
