#pragma once
// Sleeping on a 32-bit word with a timeout, which std::atomic::wait cannot
// do: the shootdown initiator waits for an acknowledgement only so long.
// Waiters and wakers must both use these (libstdc++'s atomic notify may skip
// the wake-up when it has not seen a waiter of its own).
#include <atomic>
#include <chrono>
#include <cstdint>
#include <ctime>

#include "mmu/sync/sched_point.hpp"

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace hv::mmu {

static_assert(sizeof(std::atomic<std::uint32_t>) == 4, "futex words are 32 bits");

// Sleeps while `word` holds `expected`, at most `timeout` (forever when
// negative). Spurious returns are possible: callers re-check.
inline void futex_wait(std::atomic<std::uint32_t>& word, std::uint32_t expected,
                       std::chrono::nanoseconds timeout = std::chrono::nanoseconds(-1)) {
    if (sched::controlled()) {
        // Under the schedule fuzzer's scheduler: let the other threads run
        // instead of sleeping (a spurious return, which callers allow).
        sched::blocked(sched::Point::LockBusy);
        return;
    }
    timespec ts{};
    timespec* tsp = nullptr;
    if (timeout.count() >= 0) {
        ts.tv_sec = static_cast<time_t>(timeout.count() / 1000000000);
        ts.tv_nsec = static_cast<long>(timeout.count() % 1000000000);
        tsp = &ts;
    }
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAIT_PRIVATE, expected, tsp, nullptr, 0);
}

inline void futex_wake_all(std::atomic<std::uint32_t>& word) {
    syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&word), FUTEX_WAKE_PRIVATE, 0x7fffffff, nullptr, nullptr, 0);
}

} // namespace hv::mmu
