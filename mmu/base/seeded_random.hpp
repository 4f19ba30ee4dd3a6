#pragma once
// splitmix64: a small, fast, seedable generator. Used wherever a run must
// be reproducible from a seed (the soft vCPUs' streams, the host churn's
// page choices), so one definition keeps those seeds meaning the same thing.
#include <cstdint>

namespace hv::mmu {

struct SplitMix {
    std::uint64_t s;
    explicit SplitMix(std::uint64_t seed) : s(seed) {}
    std::uint64_t next() {
        std::uint64_t z = (s += 0x9e3779b97f4a7c15ull);
        z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
        z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
        return z ^ (z >> 31);
    }
    double unit() { return static_cast<double>(next() >> 11) * 0x1.0p-53; } // uniform in [0, 1)
};

} // namespace hv::mmu
