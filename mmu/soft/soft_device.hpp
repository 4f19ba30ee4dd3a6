#pragma once
// A pseudo-device beside the software vCPUs: an ExternalTlb (a second
// notifier subscriber, like a device TLB behind an IOMMU, on the same chain
// as the shadow MMU) and the loop that keeps it populated by translating
// random pages of the region at a given rate, from whatever thread calls
// run(). The device only translates (reads and write permissions; it stores
// nothing), so the vCPUs' stamps stay theirs; what it proves is that every
// host change reaches the second subscriber too: audit() after the run.
#include "mmu/base/seeded_random.hpp"
#include "mmu/secondary/external_tlb.hpp"

#include <atomic>
#include <cstdint>
#include <string>
#include <vector>

namespace hv::mmu {

struct SoftDeviceConfig {
    double rate = 0;                // translations per second
    std::uint32_t contexts = 2;     // device contexts (TLBs) to translate through, in turn
    std::size_t entries = 64;       // entries per context
    double write_fraction = 0.2;    // translations asking for write permission
    std::uint64_t host_base = 0;    // the region: host pages [host_base, +pages)
    std::uint64_t pages = 0;
    std::uint64_t seed = 0;
};

struct SoftDeviceCounters {
    std::uint64_t translations = 0, ok = 0, retries = 0, refused = 0, failed = 0; // failed: no mapping, no frames
};

class SoftDevice {
public:
    // Subscribes the ExternalTlb to host's notifier chain. Throws
    // std::invalid_argument unless rate is finite and > 0, pages > 0 and
    // write_fraction is in [0, 1] (and ExternalTlb's own checks).
    SoftDevice(HostAddressSpace& host, const SoftDeviceConfig& config);
    SoftDevice(const SoftDevice&) = delete;
    SoftDevice& operator=(const SoftDevice&) = delete;

    // Translates until `stop` is set. One run() at a time.
    void run(const std::atomic<bool>& stop);
    SoftDeviceCounters counters() const { return counted_; } // after run() returned
    ExternalTlbCounters tlb_counters() const { return tlb_.counters(); }
    // ExternalTlb::audit(): for quiescent states.
    std::vector<std::string> audit() const { return tlb_.audit(); }

private:
    const SoftDeviceConfig cfg_;
    ExternalTlb tlb_;
    SplitMix rng_;
    SoftDeviceCounters counted_;
};

} // namespace hv::mmu
