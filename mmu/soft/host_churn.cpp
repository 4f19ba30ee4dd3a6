// The host churn loop. See host_churn.hpp.
#include "mmu/soft/host_churn.hpp"

#include "mmu/base/seeded_random.hpp"
#include "mmu/base/units.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <deque>
#include <limits>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>

namespace hv::mmu {

namespace {
using Rng = SplitMix;

std::string number(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
}

const ChurnConfig& validated(const ChurnConfig& c) {
    if (c.pages == 0) throw std::invalid_argument("HostChurn: expected a region of at least 1 page, got 0 pages");
    if (c.host_base % kPage != 0)
        throw std::invalid_argument("HostChurn: expected a 4 KiB aligned host_base, got " + hex(c.host_base));
    if (c.pages > (std::numeric_limits<std::uint64_t>::max() - c.host_base) / kPage)
        throw std::invalid_argument("HostChurn: expected the region to end inside the address space, got " +
                                    std::to_string(c.pages) + " pages from " + hex(c.host_base));
    check_churn_rates("HostChurn", c.rate, [](std::size_t op) { return to_string(static_cast<ChurnOp>(op)); });
    if (c.protect_hold.count() < 0)
        throw std::invalid_argument("HostChurn: expected protect_hold >= 0, got " +
                                    std::to_string(c.protect_hold.count()) + " ns");
    return c;
}

} // namespace

void check_churn_rates(const char* who, std::span<const double> rates,
                       const std::function<const char*(std::size_t)>& name) {
    for (std::size_t i = 0; i < rates.size(); ++i)
        if (!std::isfinite(rates[i]) || rates[i] < 0)
            throw std::invalid_argument(std::string(who) + ": expected a finite " + name(i) +
                                        " rate >= 0 operations per second, got " + number(rates[i]));
}

const char* to_string(ChurnOp op) {
    switch (op) {
    case ChurnOp::Migrate: return "migrate";
    case ChurnOp::Unmap: return "unmap";
    case ChurnOp::Protect: return "protect";
    case ChurnOp::Merge: return "merge";
    case ChurnOp::Swap: return "swap";
    case ChurnOp::Age: return "age";
    }
    return "?";
}

HostChurn::HostChurn(HostAddressSpace& host, ChurnConfig config) : host_(host), cfg_(validated(config)) {
    for (double r : cfg_.rate) enabled_ = enabled_ || r > 0;
    quota_met_.store(!enabled_ || cfg_.min_ops == 0, std::memory_order_relaxed);
}

// One operation on region page `page`; `other` is merge's second page.
// True when the host operation changed something.
bool HostChurn::do_op(ChurnOp op, std::uint64_t page, std::uint64_t other) {
    const std::uint64_t ha = cfg_.host_base + page * kPage;
    switch (op) {
    case ChurnOp::Migrate: return host_.migrate(ha);
    case ChurnOp::Unmap: {
        if (cfg_.before_unmap) cfg_.before_unmap(page);
        const bool did = host_.unmap({ha, ha + kPage}) != 0;
        if (cfg_.after_unmap) cfg_.after_unmap(page);
        return did;
    }
    case ChurnOp::Protect: return host_.protect({ha, ha + kPage}, false) != 0;
    case ChurnOp::Merge: return host_.merge(ha, cfg_.host_base + other * kPage);
    case ChurnOp::Swap: return host_.swap_out(ha);
    case ChurnOp::Age: {
        // 16 pages at a time, as reclaim scans a batch rather than one page.
        const std::uint64_t end = std::min(cfg_.pages, page + 16);
        return host_.age({ha, cfg_.host_base + end * kPage});
    }
    }
    return false;
}

void HostChurn::update_quota(const ChurnCounters& counted) {
    if (quota_met_.load(std::memory_order_relaxed)) return;
    for (std::size_t op = 0; op < kChurnOps; ++op)
        if (cfg_.rate[op] > 0 && attempted_before_[op] + counted.attempted[op] < cfg_.min_ops) return;
    quota_met_.store(true, std::memory_order_release);
}

void HostChurn::pause() {
    std::unique_lock lock(pause_mutex_);
    ++pauses_;
    pause_cv_.wait(lock, [&] { return holding_ || !running_; });
}

void HostChurn::resume() {
    {
        std::lock_guard lock(pause_mutex_);
        if (pauses_ == 0) return; // no pause() to end
        if (--pauses_ == 0 && holding_) {
            holding_ = false;
            owed_pass_ = true;
        }
    }
    pause_cv_.notify_all();
}

void HostChurn::set_running(bool running) {
    {
        std::lock_guard lock(pause_mutex_);
        running_ = running;
        holding_ = false;
        owed_pass_ = false;
    }
    pause_cv_.notify_all(); // a pause() waiting for a run() that ended returns
}

void HostChurn::pass_done() {
    std::lock_guard lock(pause_mutex_);
    owed_pass_ = false;
}

void HostChurn::hold_while_paused(const std::atomic<bool>& stop) {
    std::unique_lock lock(pause_mutex_);
    if (pauses_ == 0 || owed_pass_) return;
    holding_ = true;
    pause_cv_.notify_all();
    // `stop` is the caller's flag, set without a notification: look at it
    // every millisecond, so that a run paused for good still ends.
    while (holding_ && !stop.load(std::memory_order_acquire)) pause_cv_.wait_for(lock, std::chrono::milliseconds(1));
    holding_ = false;
}

void HostChurn::run(const std::atomic<bool>& stop, ChurnCounters& out) {
    using Clock = std::chrono::steady_clock;
    Rng rng(cfg_.seed ^ 0xc0ffee);
    const std::uint64_t n = cfg_.pages;
    ChurnCounters c; // this run's: the schedule below counts from its own start
    std::deque<std::pair<Clock::time_point, std::uint64_t>> protected_pages;
    auto restore = [&](std::uint64_t p) {
        const std::uint64_t ha = cfg_.host_base + p * kPage;
        host_.protect({ha, ha + kPage}, true);
    };
    auto finish = [&] {
        for (auto& [when, p] : protected_pages) restore(p);
        protected_pages.clear();
        for (std::size_t op = 0; op < kChurnOps; ++op) {
            out.attempted[op] += c.attempted[op];
            out.done[op] += c.done[op];
            attempted_before_[op] += c.attempted[op];
        }
        set_running(false); // last: a pause() waiting for this run finds the host still
    };
    std::uint64_t skipped[kChurnOps] = {};
    const auto t0 = Clock::now();
    set_running(true);
    try {
        while (!stop.load(std::memory_order_acquire)) {
            hold_while_paused(stop);
            if (stop.load(std::memory_order_acquire)) break;
            const auto now = Clock::now();
            const double elapsed = std::chrono::duration<double>(now - t0).count();
            bool any = false, behind = false;
            for (std::size_t op = 0; op < kChurnOps; ++op) {
                const double rate = cfg_.rate[op];
                if (rate <= 0) continue;
                std::uint64_t due = static_cast<std::uint64_t>(elapsed * rate) + 1 - skipped[op];
                const auto cap = static_cast<std::uint64_t>(rate * 0.1) + 8; // 100 ms worth, see the header
                if (due > c.attempted[op] + cap) {
                    skipped[op] += due - c.attempted[op] - cap;
                    due = c.attempted[op] + cap;
                }
                // At most 8 of a kind per pass, so one kind's backlog does
                // not hold up the others.
                for (int k = 0; k < 8 && c.attempted[op] < due; ++k) {
                    any = true;
                    ++c.attempted[op];
                    const auto kind = static_cast<ChurnOp>(op);
                    const std::uint64_t p = rng.next() % n;
                    const std::uint64_t q = kind == ChurnOp::Merge ? rng.next() % n : 0;
                    if (do_op(kind, p, q)) ++c.done[op];
                    if (kind == ChurnOp::Protect) protected_pages.push_back({now + cfg_.protect_hold, p});
                }
                behind = behind || c.attempted[op] < due;
            }
            update_quota(c);
            while (!protected_pages.empty() && protected_pages.front().first <= now) {
                restore(protected_pages.front().second);
                protected_pages.pop_front();
            }
            pass_done();
            // Sleep only when nothing is due: among many busy threads a
            // sleeper waits its turn to run again, which can be milliseconds.
            if (!behind) std::this_thread::sleep_for(std::chrono::microseconds(any ? 50 : 200));
        }
    } catch (...) {
        finish();
        throw;
    }
    finish();
}

} // namespace hv::mmu
