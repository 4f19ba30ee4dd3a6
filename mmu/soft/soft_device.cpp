// The pseudo-device's translation loop. See soft_device.hpp.
#include "mmu/soft/soft_device.hpp"
#include "mmu/base/units.hpp"

#include <chrono>
#include <cmath>
#include <stdexcept>
#include <thread>

namespace hv::mmu {

namespace {
const SoftDeviceConfig& validated(const SoftDeviceConfig& c) {
    if (!std::isfinite(c.rate) || c.rate <= 0)
        throw std::invalid_argument("SoftDevice: expected a finite rate > 0 translations per second, got " +
                                    std::to_string(c.rate));
    if (c.pages == 0) throw std::invalid_argument("SoftDevice: expected a region of at least 1 page, got 0 pages");
    if (!(c.write_fraction >= 0 && c.write_fraction <= 1))
        throw std::invalid_argument("SoftDevice: expected a write fraction in [0, 1], got " +
                                    std::to_string(c.write_fraction));
    return c;
}

} // namespace

SoftDevice::SoftDevice(HostAddressSpace& host, const SoftDeviceConfig& config)
    : cfg_(validated(config)), tlb_(host, config.contexts, config.entries), rng_(config.seed ^ 0xde71ce) {}

void SoftDevice::run(const std::atomic<bool>& stop) {
    using Clock = std::chrono::steady_clock;
    const auto t0 = Clock::now();
    std::uint32_t context = 0;
    std::uint64_t skipped = 0;
    while (!stop.load(std::memory_order_acquire)) {
        const double elapsed = std::chrono::duration<double>(Clock::now() - t0).count();
        // Due by the rate; a backlog (the thread was descheduled) is capped
        // at 100 ms worth and the rest dropped, as the churn's is.
        std::uint64_t due = static_cast<std::uint64_t>(elapsed * cfg_.rate) + 1 - skipped;
        const auto cap = static_cast<std::uint64_t>(cfg_.rate * 0.1) + 8;
        if (due > counted_.translations + cap) {
            skipped += due - counted_.translations - cap;
            due = counted_.translations + cap;
        }
        if (counted_.translations >= due) {
            std::this_thread::sleep_for(std::chrono::microseconds(100));
            continue;
        }
        for (int k = 0; k < 64 && counted_.translations < due && !stop.load(std::memory_order_acquire); ++k) {
            ++counted_.translations;
            const std::uint64_t ha = cfg_.host_base + rng_.next() % cfg_.pages * kPage;
            const Access access = rng_.unit() < cfg_.write_fraction ? Access::Write : Access::Read;
            // One attempt: a Retry (an invalidation is active) is the
            // device's to count, not to spin on.
            const TlbResult r = tlb_.translate(context, ha, access);
            context = (context + 1) % cfg_.contexts;
            switch (r.status) {
            case TlbStatus::Hit:
            case TlbStatus::Refilled: ++counted_.ok; break;
            case TlbStatus::Retry: ++counted_.retries; break;
            case TlbStatus::Refused: ++counted_.refused; break;
            case TlbStatus::NoMapping:
            case TlbStatus::OutOfFrames: ++counted_.failed; break;
            }
        }
    }
}

} // namespace hv::mmu
