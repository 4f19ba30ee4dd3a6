// `vmm bench fault` reports what its threads did: every vCPU's faults
// counted, no retries without invalidations, the policy's lock work per
// fault, and the Linux and userfaultfd rows with the same thread counts.
#include "bench_cells.hpp"
#include "bench_fault.hpp"

#include <doctest/doctest.h>

#include <stdexcept>

using namespace hv::bench;
using hv::mmu::CoherencePolicy;
using hv::mmu::LockPolicy;

using bench_cells::d;
using bench_cells::s;
using bench_cells::u;

TEST_CASE("bench fault: every vCPU's faults are counted, once each, with the policy's counters") {
    FaultBenchConfig c;
    c.vcpus = {1, 4};
    c.locks = {LockPolicy::Global, LockPolicy::Rw};
    c.coherences = {CoherencePolicy::Seq};
    c.pages = 66; // 4 vCPUs: 16 each, 64 in all
    c.repeat = 2;
    c.linux_baseline = false;
    const BenchReport r = run_fault_bench(c);
    REQUIRE(r.rows().size() == 8); // 2 counts x 2 sharings x 2 locks
    for (std::size_t i = 0; i < r.rows().size(); ++i) {
        CAPTURE(i);
        const std::uint64_t vcpus = u(r, i, "vcpus");
        CHECK(s(r, i, "engine") == "shadow");
        CHECK(u(r, i, "faults") == (vcpus == 1 ? 66u : 64u));
        CHECK(d(r, i, "retries_per_fault") == 0.0); // nothing invalidates
        CHECK(d(r, i, "locks_per_fault") >= 1.0);
        CHECK(d(r, i, "fps_min") <= d(r, i, "faults_per_s"));
        CHECK(d(r, i, "faults_per_s") <= d(r, i, "fps_max"));
        CHECK(d(r, i, "fps_min") > 0);
    }
    // rw: a disjoint fault writes no cache line another vCPU writes, but one
    // 2 MiB leaf table is shared by the 4 vCPUs' pages here, and global's
    // lock word is written by every fault.
    CHECK(s(r, 0, "lock") == "global");
    CHECK(d(r, 0, "shared_atomics_per_fault") > 0.0);
}

TEST_CASE("bench fault: Linux first touch and userfaultfd rows use the same thread counts") {
    FaultBenchConfig c;
    c.vcpus = {2};
    c.locks = {LockPolicy::Rw};
    c.coherences = {CoherencePolicy::Seq};
    c.pages = 64;
    c.repeat = 1;
    const BenchReport r = run_fault_bench(c);
    std::size_t linux_rows = 0;
    for (std::size_t i = 0; i < r.rows().size(); ++i) {
        if (s(r, i, "engine") == "shadow") continue;
        ++linux_rows;
        CHECK(u(r, i, "vcpus") == 2);
        CHECK(u(r, i, "faults") == 64); // shared: 32 pages, touched by both threads
        CHECK(d(r, i, "faults_per_s") > 0);
    }
    // userfaultfd may be refused here (then the report says why in its meta).
    CHECK((linux_rows == 3 || (linux_rows == 2 && r.json().find("uffd_unavailable") != std::string::npos)));
}

TEST_CASE("bench fault: vCPU counts outside 1..1024 or above the pages, and repeat 0, are refused") {
    FaultBenchConfig c;
    c.vcpus = {0};
    CHECK_THROWS_WITH_AS(run_fault_bench(c),
                         "bench fault: vCPU counts must be 1..1024 and at most the pages (8192), got 0",
                         std::invalid_argument);
    c.vcpus = {16};
    c.pages = 8;
    CHECK_THROWS_AS(run_fault_bench(c), std::invalid_argument);
    c.pages = 64;
    c.repeat = 0;
    CHECK_THROWS_WITH_AS(run_fault_bench(c), "bench fault: --repeat must be at least 1, got 0", std::invalid_argument);
}
