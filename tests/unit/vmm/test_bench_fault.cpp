// `vmm bench fault` reports what its threads did: `pages` faults per vCPU,
// every one counted, no retries without invalidations, the policy's lock
// work per fault, disjoint vCPUs that share no leaf table (so rw and split
// write a shared line only to set up each vCPU's own table), warm rows that
// install without faulting the host, and the Linux and userfaultfd rows with
// the same thread counts and pages per thread.
#include "tests/support/bench_cells.hpp"
#include "vmm/bench/bench_fault.hpp"

#include <doctest/doctest.h>

#include <stdexcept>
#include <string>

using namespace hv::bench;
using hv::mmu::CoherencePolicy;
using hv::mmu::LockPolicy;

using bench_cells::d;
using bench_cells::s;
using bench_cells::u;

TEST_CASE("bench fault: every vCPU makes `pages` faults, each counted once, with the policy's counters") {
    FaultBenchConfig c;
    c.vcpus = {1, 4};
    c.locks = {LockPolicy::Global, LockPolicy::Rw, LockPolicy::Split};
    c.coherences = {CoherencePolicy::Seq};
    c.pages = 40;
    c.repeat = 2;
    c.linux_baseline = false;
    const BenchReport r = run_fault_bench(c);
    REQUIRE(r.rows().size() == 3 + 12); // 3 warm, then 2 counts x 2 sharings x 3 locks
    for (std::size_t i = 0; i < r.rows().size(); ++i) {
        CAPTURE(i);
        const std::uint64_t vcpus = u(r, i, "vcpus");
        CHECK(s(r, i, "engine") == "shadow");
        CHECK(u(r, i, "faults") == 40 * vcpus); // disjoint and shared alike: 40 per vCPU
        CHECK(d(r, i, "retries_per_fault") == 0.0); // nothing invalidates
        CHECK(d(r, i, "locks_per_fault") >= 1.0);
        CHECK(d(r, i, "fps_min") <= d(r, i, "faults_per_s"));
        CHECK(d(r, i, "faults_per_s") <= d(r, i, "fps_max"));
        CHECK(d(r, i, "fps_min") > 0);
        CHECK(d(r, i, "ns_per_fault") == doctest::Approx(1e9 / d(r, i, "faults_per_s")));
        // Global's lock word is written by every fault, whatever the layout.
        if (s(r, i, "lock") == "global") CHECK(d(r, i, "shared_atomics_per_fault") >= 2.0);
    }
}

TEST_CASE("bench fault: warm rows install into present host pages and existing tables") {
    FaultBenchConfig c;
    c.vcpus = {1};
    c.locks = {LockPolicy::Rw, LockPolicy::Split};
    c.coherences = {CoherencePolicy::Seq, CoherencePolicy::PtLock};
    c.pages = 3 * kWarmBatch + 5; // a short last batch
    c.repeat = 1;
    c.linux_baseline = false;
    const BenchReport r = run_fault_bench(c);
    REQUIRE(r.rows().size() == 4 + 2 * 4);
    for (std::size_t i = 0; i < 4; ++i) {
        CAPTURE(i);
        CHECK(s(r, i, "sharing") == "warm");
        CHECK(u(r, i, "vcpus") == 1);
        CHECK(u(r, i, "faults") == c.pages);
        CHECK(d(r, i, "ns_per_fault") > 0);
        // No host page is made present: the host fault is a lookup of a
        // present PTE, without its PT lock; nothing shared is written, no
        // table is created.
        CHECK(d(r, i, "host_locks_per_fault") == (s(r, i, "coherence") == "ptlock" ? 1.0 : 0.0));
        CHECK(d(r, i, "host_shared_atomics_per_fault") == 0.0);
        CHECK(d(r, i, "shared_atomics_per_fault") == 0.0);
        CHECK(d(r, i, "locks_per_fault") == 2.0); // the policy lock, the frame's rmap lock
    }
}

TEST_CASE("bench fault: disjoint vCPUs fault their own leaf tables, and rw and split write shared lines only to set them up") {
    FaultBenchConfig c;
    c.vcpus = {8};
    c.locks = {LockPolicy::Rw, LockPolicy::Split};
    c.coherences = {CoherencePolicy::Seq};
    c.pages = 512; // a whole leaf table each
    c.repeat = 1;
    c.linux_baseline = false;
    const BenchReport r = run_fault_bench(c);
    std::size_t disjoint = 0;
    for (std::size_t i = 0; i < r.rows().size(); ++i) {
        if (s(r, i, "sharing") != "disjoint") continue;
        CAPTURE(s(r, i, "lock"));
        ++disjoint;
        CHECK(u(r, i, "faults") == 8 * 512);
        // Per vCPU, for its one leaf table: linking it (1), the first slab of
        // masks (2), its bit in the mask (1), and at most one more table
        // link when it is first under a new upper table: at most 5 / 512.
        // A split lock or an rmap line shared with another vCPU would add 2
        // per fault.
        CHECK(d(r, i, "shared_atomics_per_fault") > 0.0);
        CHECK(d(r, i, "shared_atomics_per_fault") <= 5.0 / 512);
        // The host: its allocator lock once per 64-frame chunk (2 each: 9
        // chunks for 512 pages and 2 tables), the link of the vCPU's leaf
        // table and perhaps of upper tables; no region lock, no shared PT lock.
        CHECK(d(r, i, "host_shared_atomics_per_fault") <= (2.0 * 9 + 3) / 512);
    }
    CHECK(disjoint == 2);
}

TEST_CASE("bench fault: Linux first touch and userfaultfd rows use the same thread counts and pages per thread") {
    FaultBenchConfig c;
    c.vcpus = {2};
    c.locks = {LockPolicy::Rw};
    c.coherences = {CoherencePolicy::Seq};
    c.pages = 32;
    c.repeat = 1;
    const BenchReport r = run_fault_bench(c);
    std::size_t linux_rows = 0;
    for (std::size_t i = 0; i < r.rows().size(); ++i) {
        if (s(r, i, "engine") == "shadow") continue;
        ++linux_rows;
        CHECK(u(r, i, "vcpus") == 2);
        CHECK(u(r, i, "faults") == 64); // 32 pages per thread; shared: 32 pages, touched by both threads
        CHECK(d(r, i, "faults_per_s") > 0);
    }
    // userfaultfd may be refused here (then the report says why in its meta).
    CHECK((linux_rows == 3 || (linux_rows == 2 && r.json().find("uffd_unavailable") != std::string::npos)));
}

TEST_CASE("bench fault: vCPU counts outside 1..1024, pages 0, a region above 4 GiB, and repeat 0, are refused") {
    FaultBenchConfig c;
    c.vcpus = {0};
    CHECK_THROWS_WITH_AS(run_fault_bench(c), "bench fault: vCPU counts must be 1..1024, got 0", std::invalid_argument);
    c.vcpus = {1025};
    CHECK_THROWS_AS(run_fault_bench(c), std::invalid_argument);
    c.vcpus = {16};
    c.pages = 0;
    CHECK_THROWS_WITH_AS(run_fault_bench(c), "bench fault: pages per vCPU must be at least 1, got 0",
                         std::invalid_argument);
    // Each vCPU's share starts on its own 2 MiB boundary: 1024 vCPUs of 1025
    // pages take 1024 x 1536 pages, 6 GiB.
    c.vcpus = {1024};
    c.pages = 1025;
    CHECK_THROWS_WITH_AS(run_fault_bench(c),
                         "bench fault: 1024 vCPUs x 1025 pages (each vCPU's rounded up to 2 MiB) exceed 4 GiB",
                         std::invalid_argument);
    c.vcpus = {16};
    c.pages = 64;
    c.repeat = 0;
    CHECK_THROWS_WITH_AS(run_fault_bench(c), "bench fault: --repeat must be at least 1, got 0", std::invalid_argument);
}
