#include "vmm/shadow/latency_histogram.hpp"

#include <algorithm>
#include <bit>
#include <cstdio>

namespace hv {

unsigned LatencyHistogram::bucket(std::uint64_t ns) {
    if (ns < kSub) return static_cast<unsigned>(ns);
    const unsigned log = 63u - static_cast<unsigned>(std::countl_zero(ns)); // ns in [2^log, 2^(log+1))
    const unsigned sub = static_cast<unsigned>((ns >> (log - 2)) & (kSub - 1));
    return std::min(kBuckets - 1, log * kSub + sub);
}

std::uint64_t LatencyHistogram::lower(unsigned b) {
    if (b < kSub) return b;
    const unsigned log = b / kSub, sub = b % kSub;
    return std::uint64_t{kSub + sub} << (log - 2);
}

std::uint64_t LatencyHistogram::upper(unsigned b) {
    if (b < kSub) return b;
    const unsigned log = b / kSub, sub = b % kSub;
    return (std::uint64_t{kSub + sub + 1} << (log - 2)) - 1;
}

void LatencyHistogram::add(std::uint64_t ns) {
    ++count_;
    ++buckets_[bucket(ns)];
}

void LatencyHistogram::merge(const LatencyHistogram& o) {
    count_ += o.count_;
    for (unsigned b = 0; b < kBuckets; ++b) buckets_[b] += o.buckets_[b];
}

std::uint64_t LatencyHistogram::percentile(double p) const { return percentile_bucket(p).upper; }

LatencyHistogram::Bucket LatencyHistogram::percentile_bucket(double p) const {
    if (count_ == 0) return {0, 0};
    p = std::clamp(p, 0.0, 100.0);
    const auto rank = static_cast<std::uint64_t>(p / 100.0 * static_cast<double>(count_ - 1)) + 1;
    std::uint64_t seen = 0;
    unsigned b = 0;
    for (; b < kBuckets - 1; ++b) {
        seen += buckets_[b];
        if (seen >= rank) break;
    }
    return {lower(b), upper(b)};
}

std::string describe_percentiles(const LatencyHistogram& h) {
    const LatencyHistogram::Bucket p50 = h.percentile_bucket(50), p99 = h.percentile_bucket(99);
    using ull = unsigned long long;
    char line[256];
    std::snprintf(line, sizeof line,
                  "p50 %llu ns, p99 %llu ns (upper bounds of their histogram buckets: p50 in %llu-%llu ns, "
                  "p99 in %llu-%llu ns; %llu timed)",
                  static_cast<ull>(p50.upper), static_cast<ull>(p99.upper), static_cast<ull>(p50.lower),
                  static_cast<ull>(p50.upper), static_cast<ull>(p99.lower), static_cast<ull>(p99.upper),
                  static_cast<ull>(h.count()));
    return line;
}

} // namespace hv
