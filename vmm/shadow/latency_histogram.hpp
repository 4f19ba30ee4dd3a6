#pragma once
// Fault service times as the VMM sees them (--stats "fault service").
#include <cstdint>
#include <string>

namespace hv {

// A log-linear histogram of nanoseconds, 4 buckets per power of two. Not
// thread-safe: each vCPU's is written by that vCPU's thread only.
class alignas(64) LatencyHistogram {
public:
    void add(std::uint64_t ns);
    void merge(const LatencyHistogram& o);
    std::uint64_t count() const { return count_; }
    std::uint64_t percentile(double p) const; // upper bound of the bucket holding the p-th percentile, ns
    struct Bucket {
        std::uint64_t lower, upper; // ns, both inclusive
    };
    Bucket percentile_bucket(double p) const; // the bucket holding the p-th percentile ({0, 0} when empty)
private:
    static constexpr unsigned kSub = 4, kBuckets = 64 * kSub;
    static unsigned bucket(std::uint64_t ns);
    static std::uint64_t lower(unsigned b);
    static std::uint64_t upper(unsigned b);
    std::uint64_t count_ = 0;
    std::uint32_t buckets_[kBuckets] = {};
};

// The --stats figures of a histogram: its p50 and p99 are only known to lie
// in a bucket, so both bounds are given, in the form "p50 U ns, p99 V ns
// (upper bounds of their histogram buckets: p50 in L-U ns, p99 in M-V ns;
// N timed)". The upper bounds lead for the scripts that read "p50 N ns, p99
// M ns" (vmm bench kvm).
std::string describe_percentiles(const LatencyHistogram& h);

} // namespace hv
