#pragma once
// Shared by the software-vCPU tests (test_mmu_soft*.cpp): a small run's
// configuration and a result described for INFO().
#include "mmu/soft/soft_vcpu.hpp"

#include <cstdint>
#include <string>

namespace hv::mmu::test {

// `vcpus` vCPUs doing exactly `ops` accesses each over `pages` pages, half
// of them writes, with a 64-entry 4-way TLB of the given model.
inline SoftRunConfig small(std::uint32_t vcpus, std::uint64_t pages, std::uint64_t ops,
                           TlbModel model = TlbModel::Recheck) {
    SoftRunConfig c;
    c.vcpus = vcpus;
    c.pages = pages;
    c.ops_per_vcpu = ops;
    c.write_fraction = 0.5;
    c.tlb = {64, 4, model};
    return c;
}

inline std::string describe(const SoftRunResult& r) {
    std::string s = "lost=" + std::to_string(r.lost_writes) + " violations=" + std::to_string(r.violations) +
                    " audit=" + std::to_string(r.audit.size()) + " timed_out=" + std::to_string(r.timed_out);
    for (const auto& d : r.details) s += "\n  " + d;
    for (const auto& a : r.audit) s += "\n  audit: " + a;
    return s;
}

} // namespace hv::mmu::test
