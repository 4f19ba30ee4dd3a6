// The MMU policy options `vmm soft` and `vmm run --paging shadow` share
// (vmm/cli/mmu_options.hpp: --lock, --coherence, --batch, --churn), and the
// fault-latency histogram of shadow mode's --stats (vmm/shadow/shadow_vm.hpp).
#include <doctest/doctest.h>

#include <cstdint>
#include <string>
#include <vector>

#include "tests/support/text_match.hpp"
#include "vmm/cli/mmu_options.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/shadow/shadow_vm.hpp"

using hv::LatencyHistogram;
using hv::MmuPolicyArgs;
namespace mmu = hv::mmu;

using hv::test::contains;

namespace {

struct Parsed {
    mmu::ShadowConfig shadow;
    double rate[mmu::kChurnOps] = {};
    std::string error; // the VmmError's message, "" when parsing succeeded
};

// Parses over a config whose fields all differ from what the tests pass, so
// an option that was not applied is visible.
Parsed parse(const MmuPolicyArgs& args) {
    Parsed p;
    p.shadow.lock = mmu::LockPolicy::Global;
    p.shadow.coherence = mmu::CoherencePolicy::Seq;
    p.shadow.batch = 77;
    p.shadow.vcpus = 5;
    for (double& r : p.rate) r = -1;
    try {
        hv::parse_mmu_policies(args, p.shadow, p.rate);
    } catch (const hv::VmmError& e) {
        p.error = e.what();
    }
    return p;
}

MmuPolicyArgs lock(std::string v) { return {std::move(v), "", "", ""}; }
MmuPolicyArgs coherence(std::string v) { return {"", std::move(v), "", ""}; }
MmuPolicyArgs batch(std::string v) { return {"", "", std::move(v), ""}; }
MmuPolicyArgs churn(std::string v) { return {"", "", "", std::move(v)}; }

std::size_t op(mmu::ChurnOp o) { return static_cast<std::size_t>(o); }

// What an error must look like: it names the option and quotes what was typed.
void check_error(const Parsed& p, const std::string& option, const std::string& typed) {
    CAPTURE(p.error);
    CHECK(contains(p.error, option));
    CHECK(contains(p.error, typed));
}

} // namespace

// ---------------------------------------------------------------------------
// parse_mmu_policies

TEST_CASE("parse_mmu_policies: nothing given keeps every default") {
    const Parsed p = parse({});
    CHECK(p.error.empty());
    CHECK(p.shadow.lock == mmu::LockPolicy::Global);
    CHECK(p.shadow.coherence == mmu::CoherencePolicy::Seq);
    CHECK(p.shadow.batch == 77);
    CHECK(p.shadow.vcpus == 5);
    for (double r : p.rate) CHECK(r == -1);
}

TEST_CASE("parse_mmu_policies: each --lock name") {
    CHECK(parse(lock("global")).shadow.lock == mmu::LockPolicy::Global);
    CHECK(parse(lock("rw")).shadow.lock == mmu::LockPolicy::Rw);
    CHECK(parse(lock("split")).shadow.lock == mmu::LockPolicy::Split);
    const Parsed p = parse(lock("split"));
    CHECK(p.error.empty());
    CHECK(p.shadow.coherence == mmu::CoherencePolicy::Seq); // the others untouched
    CHECK(p.shadow.batch == 77);
    // The names round-trip through to_string, which --stats prints.
    for (mmu::LockPolicy l : {mmu::LockPolicy::Global, mmu::LockPolicy::Rw, mmu::LockPolicy::Split})
        CHECK(parse(lock(mmu::to_string(l))).shadow.lock == l);
}

TEST_CASE("parse_mmu_policies: each --coherence name") {
    CHECK(parse(coherence("seq")).shadow.coherence == mmu::CoherencePolicy::Seq);
    CHECK(parse(coherence("ptlock")).shadow.coherence == mmu::CoherencePolicy::PtLock);
    CHECK(parse(coherence("range-active")).shadow.coherence == mmu::CoherencePolicy::RangeActive);
    CHECK(parse(coherence("ptlock")).shadow.lock == mmu::LockPolicy::Global);
    for (mmu::CoherencePolicy c : {mmu::CoherencePolicy::Seq, mmu::CoherencePolicy::PtLock, mmu::CoherencePolicy::RangeActive})
        CHECK(parse(coherence(mmu::to_string(c))).shadow.coherence == c);
}

TEST_CASE("parse_mmu_policies: unknown --lock and --coherence names") {
    for (const char* bad : {"Global", "RW", "mutex", " rw", "rw ", "split,rw"}) {
        CAPTURE(bad);
        const Parsed p = parse(lock(bad));
        check_error(p, "--lock", std::string("'") + bad + "'");
        CHECK(contains(p.error, "global, rw or split"));
    }
    for (const char* bad : {"SEQ", "range_active", "range", "pt-lock"}) {
        CAPTURE(bad);
        const Parsed p = parse(coherence(bad));
        check_error(p, "--coherence", std::string("'") + bad + "'");
        CHECK(contains(p.error, "seq, ptlock or range-active"));
    }
}

TEST_CASE("parse_mmu_policies: --batch") {
    CHECK(parse(batch("0")).shadow.batch == 0); // unlimited
    CHECK(parse(batch("1")).shadow.batch == 1);
    CHECK(parse(batch("512")).shadow.batch == 512);
    CHECK(parse(batch("1073741824")).shadow.batch == (std::size_t{1} << 30)); // the largest accepted
    CHECK(parse(batch("512")).error.empty());
    for (const char* bad : {"1073741825", "-1", "abc", "12k", " 5", "5 ", "0x10", "18446744073709551616", "1.5"}) {
        CAPTURE(bad);
        const Parsed p = parse(batch(bad));
        check_error(p, "--batch", std::string("'") + bad + "'");
        CHECK(p.shadow.batch == 77);
    }
}

TEST_CASE("parse_mmu_policies: --churn sets the named rates and leaves the others") {
    const Parsed p = parse(churn("migrate=200,unmap=5"));
    CHECK(p.error.empty());
    CHECK(p.rate[op(mmu::ChurnOp::Migrate)] == 200);
    CHECK(p.rate[op(mmu::ChurnOp::Unmap)] == 5);
    CHECK(p.rate[op(mmu::ChurnOp::Protect)] == -1);
    CHECK(p.rate[op(mmu::ChurnOp::Merge)] == -1);
    CHECK(p.rate[op(mmu::ChurnOp::Swap)] == -1);
    CHECK(p.rate[op(mmu::ChurnOp::Age)] == -1);

    const Parsed all = parse(churn("age=0.5,swap=1e3,merge=0,protect=10000000,unmap=7,migrate=1"));
    CHECK(all.error.empty());
    CHECK(all.rate[op(mmu::ChurnOp::Age)] == 0.5);
    CHECK(all.rate[op(mmu::ChurnOp::Swap)] == 1000);
    CHECK(all.rate[op(mmu::ChurnOp::Merge)] == 0);
    CHECK(all.rate[op(mmu::ChurnOp::Protect)] == 1e7);
    CHECK(all.rate[op(mmu::ChurnOp::Unmap)] == 7);
    CHECK(all.rate[op(mmu::ChurnOp::Migrate)] == 1);
}

TEST_CASE("parse_mmu_policies: --churn errors name the option and what was typed") {
    struct Bad {
        const char* churn;
        const char* mentions;
    };
    const Bad cases[] = {
        {"bogus=1", "'bogus'"},                 // unknown operation
        {"Migrate=1", "'Migrate'"},
        {"migrate=1,bogus=2", "'bogus'"},
        {"migrate=1,migrate=2", "twice"},       // duplicate
        {"unmap=1,age=2,unmap=3", "'unmap' given twice"},
        {"migrate", "'migrate'"},               // missing '='
        {"migrate=1,unmap", "'unmap'"},
        {"migrate=-1", "'-1'"},                 // negative
        {"migrate=10000001", "'10000001'"},     // huge
        {"migrate=1e8", "'1e8'"},
        {"migrate=inf", "'inf'"},
        {"migrate=nan", "'nan'"},
        {"migrate=abc", "'abc'"},               // non-numeric
        {"migrate=12x", "'12x'"},
        {"migrate=", "''"},                     // empty rate
        {"migrate= 5", "' 5'"},
        {"migrate=1,", "after the last ','"},   // trailing comma
        {",migrate=1", "''"},                   // empty item
        {"migrate=1,,unmap=2", "''"},
        {",", "''"},
    };
    for (const Bad& b : cases) {
        CAPTURE(b.churn);
        const Parsed p = parse(churn(b.churn));
        check_error(p, "--churn", b.mentions);
    }
    // The rate error says what a rate is.
    CHECK(contains(parse(churn("swap=-3")).error, "0..10000000"));
    CHECK(contains(parse(churn("nope=3")).error, "migrate, unmap, protect, merge, swap or age"));
}

// ---------------------------------------------------------------------------
// LatencyHistogram

TEST_CASE("LatencyHistogram: empty") {
    const LatencyHistogram h;
    CHECK(h.count() == 0);
    CHECK(h.percentile(0) == 0);
    CHECK(h.percentile(50) == 0);
    CHECK(h.percentile(99) == 0);
    CHECK(h.percentile(100) == 0);
}

TEST_CASE("LatencyHistogram: N equal samples put p50 and p99 between x and 1.25x + 1") {
    std::vector<std::uint64_t> values = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 15, 16, 17, 100, 999, 1000, 1023, 1024, 1025,
                                         12345, 65535, 1u << 20, 123456789, 1000000000, 4294967295ull, 4294967296ull,
                                         (1ull << 40) + 12345, (1ull << 62) + 1, ~0ull / 3, ~0ull - 1, ~0ull};
    for (unsigned k = 2; k < 64; ++k) { // each power of two and its neighbours
        values.push_back((1ull << k) - 1);
        values.push_back(1ull << k);
        values.push_back((1ull << k) + (1ull << (k - 2)) - 1); // the last value of a sub-bucket
    }
    for (std::uint64_t x : values) {
        for (std::uint64_t n : {std::uint64_t{1}, std::uint64_t{2}, std::uint64_t{1000}}) {
            CAPTURE(x);
            CAPTURE(n);
            LatencyHistogram h;
            for (std::uint64_t i = 0; i < n; ++i) h.add(x);
            CHECK(h.count() == n);
            // 1.25x + 1 without overflow: x + x/4 + 1, saturated.
            const std::uint64_t quarter = x / 4 + 1;
            const std::uint64_t hi = x > ~0ull - quarter ? ~0ull : x + quarter;
            for (double p : {0.0, 50.0, 99.0, 100.0}) {
                CAPTURE(p);
                const std::uint64_t v = h.percentile(p);
                CHECK(v >= x);
                CHECK(v <= hi);
            }
        }
    }
}

TEST_CASE("LatencyHistogram: percentiles are monotone and bound the samples") {
    LatencyHistogram h;
    std::uint64_t state = 0x9e3779b97f4a7c15ull, lo = ~0ull, hi = 0;
    for (int i = 0; i < 5000; ++i) {
        state = state * 6364136223846793005ull + 1442695040888963407ull;
        // Spread over many magnitudes: 0 .. 2^40.
        const std::uint64_t v = (state >> 24) >> ((state >> 3) % 41);
        lo = v < lo ? v : lo;
        hi = v > hi ? v : hi;
        h.add(v);
    }
    CHECK(h.count() == 5000);
    std::uint64_t previous = 0;
    bool monotone = true;
    for (int tenth = 0; tenth <= 1000; ++tenth) {
        const std::uint64_t v = h.percentile(tenth / 10.0);
        monotone = monotone && v >= previous;
        previous = v;
    }
    CHECK(monotone);
    CHECK(h.percentile(0) >= lo);
    CHECK(h.percentile(0) <= lo + lo / 4 + 1);
    CHECK(h.percentile(100) >= hi);
    CHECK(h.percentile(100) <= hi + hi / 4 + 1);
}

TEST_CASE("LatencyHistogram: the percentile picks the right sample") {
    LatencyHistogram h;
    for (int i = 0; i < 90; ++i) h.add(100);
    for (int i = 0; i < 10; ++i) h.add(1000000);
    CHECK(h.percentile(50) >= 100);
    CHECK(h.percentile(50) <= 126);
    CHECK(h.percentile(89) <= 126);
    CHECK(h.percentile(95) >= 1000000);
    CHECK(h.percentile(100) >= 1000000);
    CHECK(h.percentile(100) <= 1250001);
}

TEST_CASE("LatencyHistogram: merge adds counts and buckets") {
    LatencyHistogram a, b, empty;
    for (int i = 0; i < 10; ++i) a.add(100);
    for (int i = 0; i < 30; ++i) b.add(10000);
    LatencyHistogram m = a;
    m.merge(b);
    CHECK(m.count() == 40);
    CHECK(m.percentile(10) >= 100);
    CHECK(m.percentile(10) <= 126);
    CHECK(m.percentile(50) >= 10000);
    CHECK(m.percentile(50) <= 12501);
    CHECK(m.percentile(99) >= 10000);
    // Merging in the other order gives the same percentiles.
    LatencyHistogram n = b;
    n.merge(a);
    CHECK(n.count() == 40);
    for (double p : {0.0, 10.0, 24.0, 25.0, 26.0, 50.0, 99.0, 100.0}) CHECK(n.percentile(p) == m.percentile(p));
    // An empty histogram changes nothing; merging into an empty one copies.
    const std::uint64_t p50 = m.percentile(50);
    m.merge(empty);
    CHECK(m.count() == 40);
    CHECK(m.percentile(50) == p50);
    empty.merge(a);
    CHECK(empty.count() == 10);
    CHECK(empty.percentile(50) == a.percentile(50));
    // Merging a histogram into itself doubles it.
    a.merge(a);
    CHECK(a.count() == 20);
    CHECK(a.percentile(50) == empty.percentile(50));
}
