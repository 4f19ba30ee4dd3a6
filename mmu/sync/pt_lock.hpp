#pragma once
// A 4-byte lock: spins briefly, then sleeps on the word (futex via C++20
// atomic wait), so an array of one per frame stays small while 1024 threads
// on two cores do not burn their time slices spinning.
#include "mmu/sync/sched_point.hpp"

#include <atomic>
#include <cstdint>

namespace hv::mmu {

class PtLock {
public:
    void lock() {
        if (sched::controlled()) {
            while (!try_lock()) sched::blocked(sched::Point::LockBusy);
            return;
        }
        for (int i = 0; i < 64; ++i) {
            std::uint32_t expected = 0;
            if (word_.compare_exchange_weak(expected, 1, std::memory_order_acquire, std::memory_order_relaxed))
                return;
        }
        // 2 = locked with (possible) waiters: unlock must wake someone.
        while (word_.exchange(2, std::memory_order_acquire) != 0) word_.wait(2, std::memory_order_relaxed);
    }
    bool try_lock() {
        std::uint32_t expected = 0;
        return word_.compare_exchange_strong(expected, 1, std::memory_order_acquire, std::memory_order_relaxed);
    }
    void unlock() {
        if (word_.exchange(0, std::memory_order_release) == 2) word_.notify_one();
    }

private:
    std::atomic<std::uint32_t> word_{0};
};
static_assert(sizeof(PtLock) == 4);

} // namespace hv::mmu
