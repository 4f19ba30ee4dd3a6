#pragma once
// Hand-over for locks that a zap takes and drops once per batch.
//
// A zap releases the MMU lock every `batch` entries so that a fault waiting
// for it can run in between. With an unfair lock that does not happen: the
// waiting fault sleeps in the kernel and needs microseconds to wake, the
// zapper needs nanoseconds to take the lock again, so the fault waits for
// the whole zap however small the batch (`vmm bench mixed` measured p99s of
// the whole 1 GiB zap at batch 512). Linux's queued locks are fair and KVM's
// zap loop yields when someone waits (cond_resched_rwlock_write); here the
// zapper, after releasing, waits until one of the threads that were waiting
// has taken the lock -- at most kHandOverLimit, so a waiter that was
// preempted cannot stall the zap for longer.
//
// HandOverMutex: std::mutex plus that hand-over. lock() costs nothing more
// when the mutex is free; a contended lock() counts itself in `waiting_`
// and `admitted_` (read-modify-writes of a line every waiter writes, on the
// slow path only).
#include "mmu/sync/sched_point.hpp"

#include <atomic>
#include <chrono>
#include <cstdint>
#include <mutex>
#include <thread>

namespace hv::mmu {

// Longest a releasing zapper waits for a waiter to take the lock.
inline constexpr std::chrono::microseconds kHandOverLimit{200};

// Waits until `admitted` differs from `seen` (a waiter got in) or `limit`
// passed: a short spin, then yielding the core (a waiter may need ours to
// run).
inline void wait_for_admission(const std::atomic<std::uint64_t>& admitted, std::uint64_t seen,
                               std::chrono::microseconds limit = kHandOverLimit) {
    // Under the schedule fuzzer no thread waits inside lock() while a zap
    // runs (waits there go through the scheduler): nothing to hand over.
    if (sched::controlled()) return;
    for (int i = 0; i < 64; ++i) {
        if (admitted.load(std::memory_order_acquire) != seen) return;
        __builtin_ia32_pause();
    }
    const auto deadline = std::chrono::steady_clock::now() + limit;
    while (admitted.load(std::memory_order_acquire) == seen && std::chrono::steady_clock::now() < deadline)
        std::this_thread::yield();
}

class HandOverMutex {
public:
    void lock() {
        if (mutex_.try_lock()) return;
        if (sched::controlled()) {
            while (!mutex_.try_lock()) sched::blocked(sched::Point::LockBusy);
            return;
        }
        waiting_.fetch_add(1, std::memory_order_relaxed);
        mutex_.lock();
        waiting_.fetch_sub(1, std::memory_order_relaxed);
        admitted_.fetch_add(1, std::memory_order_release);
    }
    bool try_lock() { return mutex_.try_lock(); }
    void unlock() { mutex_.unlock(); }
    // Releases the mutex; when a thread was waiting for it, returns only
    // once one waiter took it (or `limit` passed).
    void unlock_and_hand_over(std::chrono::microseconds limit = kHandOverLimit) {
        const bool someone_waits = waiting_.load(std::memory_order_relaxed) != 0;
        const std::uint64_t seen = admitted_.load(std::memory_order_acquire);
        mutex_.unlock();
        if (someone_waits) wait_for_admission(admitted_, seen, limit);
    }
    // Threads inside a contended lock(), and contended lock() calls that got
    // the mutex so far (tests).
    std::uint32_t waiting() const { return waiting_.load(std::memory_order_acquire); }
    std::uint64_t admitted() const { return admitted_.load(std::memory_order_acquire); }

private:
    std::mutex mutex_;
    std::atomic<std::uint32_t> waiting_{0};   // threads inside a contended lock()
    std::atomic<std::uint64_t> admitted_{0};  // contended lock() calls that got the mutex
};

} // namespace hv::mmu
