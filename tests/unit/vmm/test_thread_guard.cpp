// hv::run_guarded (vmm/kvm/thread_guard.hpp): what the vCPU and host-churn
// threads run their bodies through, so that no exception leaves a thread.
#include <doctest/doctest.h>

#include <new>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "vmm/kvm/thread_guard.hpp"

namespace {

struct Failures {
    std::vector<std::string> reasons;
    auto sink() {
        return [this](const std::string& reason) { reasons.push_back(reason); };
    }
};

} // namespace

TEST_CASE("run_guarded: a body that returns reports nothing") {
    Failures f;
    int runs = 0;
    hv::run_guarded("host churn", [&] { ++runs; }, f.sink());
    CHECK(runs == 1);
    CHECK(f.reasons.empty());
}

TEST_CASE("run_guarded: a std::exception becomes one failure with its prefix and what()") {
    Failures f;
    hv::run_guarded("host churn", [] { throw std::out_of_range("FrameSpace::entries: expected a table pfn"); },
                    f.sink());
    REQUIRE(f.reasons.size() == 1);
    CHECK(f.reasons[0] == "host churn: FrameSpace::entries: expected a table pfn");
}

TEST_CASE("run_guarded: an exception of any other type is reported too, as of unknown type") {
    Failures f;
    hv::run_guarded("vcpu 3", [] { throw 42; }, f.sink());
    REQUIRE(f.reasons.size() == 1);
    CHECK(f.reasons[0] == "vcpu 3: an exception of unknown type");
}

// Without the guard the exception would leave the thread's function and
// std::terminate would end this test binary.
TEST_CASE("run_guarded: a thread whose body throws ends normally, its failure reported") {
    Failures f;
    std::thread t([&] { hv::run_guarded("host churn", [] { throw std::bad_alloc(); }, f.sink()); });
    t.join();
    REQUIRE(f.reasons.size() == 1);
    CHECK(f.reasons[0] == "host churn: std::bad_alloc");
}
