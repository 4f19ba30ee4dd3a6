// SoftChurn's loop: rates, the quota, and undoing removals and protections
// when they fall due. The operations are in soft_churn_ops.cpp. See soft_churn.hpp.
#include "mmu/soft/soft_churn.hpp"

#include "mmu/base/units.hpp"
#include "mmu/soft/host_churn.hpp"

#include <stdexcept>
#include <string>
#include <thread>

namespace hv::mmu {

namespace {
const SoftChurnConfig& validated(const SoftChurnConfig& c, std::uint64_t pages) {
    if (pages == 0) throw std::invalid_argument("SoftChurn: expected a region of at least 1 page, got 0 pages");
    check_churn_rates("SoftChurn", c.rate, [](std::size_t op) { return to_string(static_cast<SoftChurnOp>(op)); });
    if (c.memslot_hold.count() < 0 || c.protect_hold.count() < 0)
        throw std::invalid_argument("SoftChurn: expected memslot_hold and protect_hold >= 0, got " +
                                    std::to_string(c.memslot_hold.count()) + " and " +
                                    std::to_string(c.protect_hold.count()) + " us");
    return c;
}

} // namespace

const char* to_string(SoftChurnOp op) {
    switch (op) {
    case SoftChurnOp::Memslot: return "memslot";
    case SoftChurnOp::ZeroMerge: return "zero-merge";
    case SoftChurnOp::Range: return "range";
    }
    return "?";
}

SoftChurnCounters& SoftChurnCounters::operator+=(const SoftChurnCounters& o) {
    for (std::size_t op = 0; op < kSoftChurnOps; ++op) {
        attempted[op] += o.attempted[op];
        done[op] += o.done[op];
    }
    memslot_readds += o.memslot_readds;
    range_pages += o.range_pages;
    range_crossings += o.range_crossings;
    return *this;
}

SoftChurn::SoftChurn(ShadowMmu& mmu, SoftChurnConfig config, std::uint64_t host_base, std::uint64_t pages,
                     std::uint64_t seed, std::uint64_t min_ops, std::function<void(std::uint64_t)> before_unmap,
                     std::function<void(std::uint64_t)> after_unmap)
    : mmu_(mmu), host_(mmu.host()), cfg_(validated(config, pages)), host_base_(host_base), pages_(pages),
      min_ops_(min_ops), before_unmap_(std::move(before_unmap)), after_unmap_(std::move(after_unmap)),
      slots_(mmu.memslots()), removed_(slots_.size(), false), rng_(seed ^ 0x5eed5c4a) {
    if (host_base % kPage != 0)
        throw std::invalid_argument("SoftChurn: expected a 4 KiB aligned host_base, got " + hex(host_base));
    quota_met_.store(!enabled() || min_ops == 0, std::memory_order_relaxed);
}

void SoftChurn::update_quota(const SoftChurnCounters& c) {
    if (quota_met_.load(std::memory_order_relaxed)) return;
    for (std::size_t op = 0; op < kSoftChurnOps; ++op)
        if (cfg_.rate[op] > 0 && attempted_before_[op] + c.attempted[op] < min_ops_) return;
    quota_met_.store(true, std::memory_order_release);
}

void SoftChurn::undo(const Undo& u, SoftChurnCounters& c) {
    if (u.memslot) {
        mmu_.add_memslot(slots_[u.slot]);
        removed_[u.slot] = false;
        ++c.memslot_readds;
    } else {
        const std::uint64_t start = host_base_ + u.first * kPage;
        host_.protect({start, start + u.count * kPage}, true);
    }
}

void SoftChurn::run(const std::atomic<bool>& stop, SoftChurnCounters& out) {
    SoftChurnCounters c; // this run's: the schedule counts from its own start
    const auto finish = [&] {
        // Nothing stays removed or read-only behind a run.
        for (const Undo& u : undo_) undo(u, c);
        undo_.clear();
        for (std::size_t op = 0; op < kSoftChurnOps; ++op) attempted_before_[op] += c.attempted[op];
        out += c;
    };
    std::uint64_t skipped[kSoftChurnOps] = {};
    const auto t0 = Clock::now();
    try {
        while (!stop.load(std::memory_order_acquire)) {
            const auto now = Clock::now();
            const double elapsed = std::chrono::duration<double>(now - t0).count();
            bool any = false, behind = false;
            for (std::size_t op = 0; op < kSoftChurnOps; ++op) {
                const double rate = cfg_.rate[op];
                if (rate <= 0) continue;
                // As HostChurn: due by the rate, a backlog of more than 100 ms
                // worth dropped, at most 8 of a kind per pass.
                std::uint64_t due = static_cast<std::uint64_t>(elapsed * rate) + 1 - skipped[op];
                const auto cap = static_cast<std::uint64_t>(rate * 0.1) + 8;
                if (due > c.attempted[op] + cap) {
                    skipped[op] += due - c.attempted[op] - cap;
                    due = c.attempted[op] + cap;
                }
                for (int k = 0; k < 8 && c.attempted[op] < due && !stop.load(std::memory_order_acquire); ++k) {
                    any = true;
                    ++c.attempted[op];
                    if (do_op(static_cast<SoftChurnOp>(op), now, c)) ++c.done[op];
                }
                behind = behind || c.attempted[op] < due;
            }
            update_quota(c);
            for (auto it = undo_.begin(); it != undo_.end();) {
                if (it->when > now) {
                    ++it;
                    continue;
                }
                undo(*it, c);
                it = undo_.erase(it);
            }
            if (!behind) std::this_thread::sleep_for(std::chrono::microseconds(any ? 50 : 200));
        }
    } catch (...) {
        finish();
        throw;
    }
    finish();
}

} // namespace hv::mmu
