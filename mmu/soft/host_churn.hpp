#pragma once
// Host "churn": host operations (migrate, unmap, protect, merge, swap out,
// age) on random pages of one host region, each at its own rate, from
// whatever thread calls run(). It knows nothing of who uses the region: the
// software vCPUs (soft_vcpu.hpp) and a KVM guest under shadow paging both
// run it against the host region behind their memory, so the same seed and
// rates produce the same sequence of operations for either.
//
// Rates are per second from the start of run(): the first operation of an
// enabled kind happens at once, and a backlog of more than 100 ms worth (the
// thread was descheduled) is dropped rather than run back to back, which
// would leave faults no window between invalidations. A protected page is
// made writable again protect_hold later, and at the latest when run()
// returns, so a run never leaves the region read-only behind it.
#include "mmu/host/host_address_space.hpp"

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <mutex>
#include <span>

namespace hv::mmu {

enum class ChurnOp { Migrate, Unmap, Protect, Merge, Swap, Age };
inline constexpr std::size_t kChurnOps = 6;
const char* to_string(ChurnOp op);

struct ChurnCounters {
    std::uint64_t attempted[kChurnOps] = {};
    std::uint64_t done[kChurnOps] = {}; // the host operation changed something
};

struct ChurnConfig {
    std::uint64_t host_base = 0; // first host address of the region (4 KiB aligned)
    std::uint64_t pages = 0;     // pages in the region
    double rate[kChurnOps] = {}; // operations per second, by ChurnOp; 0 = off
    std::chrono::nanoseconds protect_hold{std::chrono::microseconds(500)}; // read-only this long
    // The operations' page choices come from this (mixed as seed ^ 0xc0ffee,
    // so they differ from streams seeded with the same value).
    std::uint64_t seed = 0;
    std::uint64_t min_ops = 0; // quota of attempts per enabled op (0 = none); see quota_met()
    // Called on the run() thread just before and just after each unmap of
    // page index `page` (0..pages-1), whether or not the page was present:
    // a user that checks page contents excuses a zeroed page by them. May be empty.
    std::function<void(std::uint64_t page)> before_unmap, after_unmap;
};

// The rate check both churn threads make: throws std::invalid_argument
// ("WHO: expected a finite NAME rate >= 0 operations per second, got X")
// for the first rate that is negative or not finite; name(i) names rate i.
void check_churn_rates(const char* who, std::span<const double> rates,
                       const std::function<const char*(std::size_t)>& name);

class HostChurn {
public:
    // Throws std::invalid_argument unless pages > 0, host_base is page
    // aligned, the region does not wrap the address space, every rate is
    // finite and >= 0 and protect_hold >= 0.
    HostChurn(HostAddressSpace& host, ChurnConfig config);
    HostChurn(const HostChurn&) = delete;
    HostChurn& operator=(const HostChurn&) = delete;

    // Runs operations until `stop` is set, adding what it attempted and did
    // to `out` (read it after run() returns). Restores every page it
    // protected before returning, also when a hook throws. One run() at a
    // time; a later call starts a fresh schedule (rates count from its start).
    void run(const std::atomic<bool>& stop, ChurnCounters& out);

    // Every enabled op attempted at least min_ops times, over all runs so
    // far; true from the start when min_ops == 0 or nothing is enabled.
    // Safe to poll from other threads while run() goes (acquire: whatever
    // the run did before it set the flag is visible to the poller).
    bool quota_met() const { return quota_met_.load(std::memory_order_acquire); }
    // Any rate > 0: without one, run() only waits for `stop`.
    bool enabled() const { return enabled_; }
    const ChurnConfig& config() const { return cfg_; }

    // Holds run() between two passes of its loop until resume(), for a
    // reader that needs the host still for a while (a guest's coherence
    // check); returns once run() holds, at once when run() is not running
    // (a run() that starts while paused holds before its first operation).
    // Fair to the churn: after a resume() run() makes one more pass (the
    // operations then due) before it holds for the next pause(), so pausing
    // again and again slows the churn but never stops it. Protected pages
    // stay protected while it holds; the rates count on, and the backlog is
    // capped as after any delay. Pauses nest: run() goes on once each
    // pause() has had its resume(). Any thread; not from run()'s own thread.
    void pause();
    void resume();

private:
    bool do_op(ChurnOp op, std::uint64_t page, std::uint64_t other_page);
    void update_quota(const ChurnCounters& counted);
    void hold_while_paused(const std::atomic<bool>& stop); // on run()'s thread, between passes
    void set_running(bool running);
    void pass_done();

    HostAddressSpace& host_;
    const ChurnConfig cfg_;
    bool enabled_ = false;
    std::atomic<bool> quota_met_{true};
    std::uint64_t attempted_before_[kChurnOps] = {}; // by earlier runs, for the quota

    std::mutex pause_mutex_; // guards the pause state below
    std::condition_variable pause_cv_;
    unsigned pauses_ = 0;    // pause() calls not resumed yet
    bool holding_ = false;   // run() holds between passes for them
    bool running_ = false;   // run() is between its start and its return
    bool owed_pass_ = false; // a hold ended and run() has not made a pass since
};

} // namespace hv::mmu
