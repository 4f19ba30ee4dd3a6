// What --stats says about fault service times (vmm/shadow/shadow_vm.hpp): the
// histogram only knows which bucket holds a percentile, so the line gives the
// bucket's bounds and calls the leading figures upper bounds.
#include <doctest/doctest.h>

#include <cstdint>
#include <string>

#include "vmm/shadow/shadow_vm.hpp"

using hv::LatencyHistogram;

TEST_CASE("LatencyHistogram::percentile_bucket: the bucket holding the percentile contains the sample") {
    for (std::uint64_t ns : {0ull, 1ull, 3ull, 4ull, 5ull, 7ull, 8ull, 100ull, 50000ull, 65535ull, 65536ull, 1234567ull,
                             (1ull << 40) + 12345}) {
        CAPTURE(ns);
        LatencyHistogram h;
        h.add(ns);
        const LatencyHistogram::Bucket b = h.percentile_bucket(50);
        CHECK(b.lower <= ns);
        CHECK(ns <= b.upper);
        CHECK(b.upper == h.percentile(50));
        // 4 buckets per power of two: at most a quarter of the lower bound wide.
        CHECK(b.upper - b.lower <= b.lower / 4 + 1);
    }
}

TEST_CASE("LatencyHistogram::percentile_bucket: buckets tile the line without gaps or overlaps") {
    auto bucket_of = [](std::uint64_t ns) {
        LatencyHistogram one;
        one.add(ns);
        return one.percentile_bucket(99);
    };
    LatencyHistogram::Bucket prev = bucket_of(0);
    CHECK(prev.lower == 0);
    for (std::uint64_t ns = 1; ns < 70000; ++ns) {
        const LatencyHistogram::Bucket b = bucket_of(ns);
        if (b.lower != prev.lower) {
            CAPTURE(ns);
            CHECK(b.lower == ns);
            CHECK(prev.upper + 1 == ns);
        }
        CHECK(b.lower <= ns);
        CHECK(ns <= b.upper);
        prev = b;
    }
    CHECK(LatencyHistogram{}.percentile_bucket(50).lower == 0); // empty
    CHECK(LatencyHistogram{}.percentile_bucket(50).upper == 0);
}

TEST_CASE("describe_percentiles: upper bounds first, labelled as such, then both buckets and the count") {
    LatencyHistogram h;
    for (int i = 0; i < 98; ++i) h.add(50000);  // p50 here: bucket [49152, 57343]
    for (int i = 0; i < 2; ++i) h.add(300000);  // p99 here: bucket [262144, 327679]
    const std::string s = hv::describe_percentiles(h);
    CHECK(s == "p50 57343 ns, p99 327679 ns (upper bounds of their histogram buckets: p50 in 49152-57343 ns, "
               "p99 in 262144-327679 ns; 100 timed)");
}

TEST_CASE("describe_percentiles: an empty histogram") {
    CHECK(hv::describe_percentiles(LatencyHistogram{}) ==
          "p50 0 ns, p99 0 ns (upper bounds of their histogram buckets: p50 in 0-0 ns, p99 in 0-0 ns; 0 timed)");
}
