#pragma once
// What every Linux baseline (linux_baseline.hpp) is built from: argument
// checks with the messages the header promises, the fresh aligned region
// each one maps, and the team of threads released together so that only
// the work is timed. Internal to vmm/bench.
#include "vmm/bench/linux_baseline.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <latch>
#include <span>
#include <string>
#include <system_error>
#include <thread>
#include <utility>
#include <vector>

namespace hv::bench::linux_rig {

using Clock = std::chrono::steady_clock;

inline std::uint64_t ns_between(Clock::time_point from, Clock::time_point to) {
    return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(to - from).count());
}

// Takes errno as an argument: building `what` may allocate, and so clobber it.
[[noreturn]] inline void throw_errno(int err, const std::string& what) {
    throw std::system_error(err, std::generic_category(), what);
}

inline std::string errno_text(int err) { return std::generic_category().message(err); }

// std::invalid_argument "FN: expected X, got Y" unless the argument is in range.
void check_pages(const char* fn, std::uint64_t pages);
void check_threads(const char* fn, std::uint32_t threads);
void check_range(const char* fn, std::uint64_t bytes, std::uint64_t chunk_bytes);

// An anonymous private mapping. 2 MiB aligned so that a 2 MiB chunk covers
// exactly one page-table page, as a 2 MiB range does in our MMU;
// MAP_NORESERVE so a 4 GiB region needs no commit reservation;
// MADV_NOHUGEPAGE so that what is measured is 4 KiB work.
class Region {
public:
    Region(std::uint64_t bytes, const char* what);
    Region(const Region&) = delete;
    Region& operator=(const Region&) = delete;
    ~Region();

    std::uint8_t* data() const { return base_; }
    std::span<std::uint8_t> span() const { return {base_, bytes_}; }
    // For callers that unmap the region themselves (the munmap zap).
    std::uint8_t* release() { return std::exchange(base_, nullptr); }

private:
    std::uint8_t* base_ = nullptr;
    std::uint64_t bytes_ = 0;
};

// Writes 1 to the first byte of every page, so every page is present.
void populate(std::span<std::uint8_t> region);

// Thread t's share of `pages` when split between `threads`: [first, end).
inline std::pair<std::uint64_t, std::uint64_t> share(std::uint64_t pages, std::uint32_t threads, std::uint32_t t) {
    return {pages * t / threads, pages * (t + 1) / threads};
}

// Threads that start at one instant: each parks at the gate once running,
// run() opens it, and the time returned runs from the opening to the last
// thread's finish, so thread creation and joining are not measured.
class Team {
public:
    Team(std::uint32_t threads, std::function<void(std::uint32_t)> body);
    Team(const Team&) = delete;
    Team& operator=(const Team&) = delete;
    ~Team() { stop(); }

    std::uint64_t run();

private:
    enum Gate : int { kParked, kGo, kAbort };
    void stop();

    std::function<void(std::uint32_t)> body_;
    std::atomic<int> gate_{kParked};
    std::latch parked_;
    std::vector<Clock::time_point> finished_; // slot t written only by thread t
    std::vector<std::thread> threads_;
};

} // namespace hv::bench::linux_rig
