#pragma once
// A reader/writer lock whose readers never write a cache line another
// reader writes: each reader slot (a vCPU index) has its own line. A reader
// raises its slot and then checks the writer flag; a writer raises the flag
// and then waits until every slot is down. Both sides use sequentially
// consistent operations, so either the reader sees the flag (and backs off)
// or the writer sees the slot (and waits) -- never neither.
//
// Why: std::shared_mutex makes every reader write the one lock word, which
// is the convoy the `rw` policy exists to avoid (DESIGN.md: count atomics on
// shared cache lines). Writers (zap batches, memslot changes) pay a scan of
// all slots instead; they are rare and batched. This is the idea of Linux's
// percpu rw-semaphore.
//
// The last slot is shared by every reader that is not a vCPU (host
// operations, audits); only those readers contend on it.
#include "futex.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

namespace hv::mmu {

class ReaderSlotLock {
public:
    // `slots` vCPU slots plus the shared one.
    explicit ReaderSlotLock(std::uint32_t slots) : slots_(slots), readers_(std::make_unique<Slot[]>(slots + 1)) {}

    std::uint32_t shared_slot() const { return slots_; }

    // `slot` is a vCPU index below slots(), or shared_slot() (or anything
    // larger, which means the same).
    void lock_shared(std::uint32_t slot) {
        auto& mine = readers_[slot < slots_ ? slot : slots_].count;
        for (;;) {
            mine.fetch_add(1, std::memory_order_seq_cst);
            if (!writer_.load(std::memory_order_seq_cst)) return;
            // A writer is in (or coming): step back so it can finish, and
            // wait without writing anything.
            unlock_shared(slot);
            while (writer_.load(std::memory_order_acquire) != 0) futex_wait(writer_, 1);
        }
    }
    void unlock_shared(std::uint32_t slot) {
        auto& mine = readers_[slot < slots_ ? slot : slots_].count;
        // The writer raised its flag before it looked at our slot, and the
        // RMW orders our read of the flag after our release: a writer that
        // sleeps on our slot is seen here and woken.
        if (mine.fetch_sub(1, std::memory_order_seq_cst) == 1 && writer_.load(std::memory_order_seq_cst) != 0)
            futex_wake_all(mine);
    }

    void lock() {
        writer_mutex_.lock();
        writer_.store(1, std::memory_order_seq_cst);
        // Sleep on each busy slot until its last reader leaves: a reader may
        // be preempted inside, and spinning would only take its CPU.
        for (std::uint32_t i = 0; i <= slots_; ++i)
            for (std::uint32_t n = readers_[i].count.load(std::memory_order_seq_cst); n != 0;
                 n = readers_[i].count.load(std::memory_order_seq_cst))
                futex_wait(readers_[i].count, n);
    }
    void unlock() {
        writer_.store(0, std::memory_order_release);
        futex_wake_all(writer_);
        writer_mutex_.unlock();
    }

    // For std::shared_lock-style guards with a slot.
    class SharedGuard {
    public:
        SharedGuard(ReaderSlotLock& l, std::uint32_t slot) : l_(l), slot_(slot) { l_.lock_shared(slot_); }
        ~SharedGuard() { l_.unlock_shared(slot_); }
        SharedGuard(const SharedGuard&) = delete;
        SharedGuard& operator=(const SharedGuard&) = delete;

    private:
        ReaderSlotLock& l_;
        std::uint32_t slot_;
    };

private:
    struct alignas(64) Slot {
        std::atomic<std::uint32_t> count{0};
    };
    std::uint32_t slots_;
    std::unique_ptr<Slot[]> readers_;
    // 1 while a writer holds or waits for the lock. A futex word rather than
    // std::atomic<bool>::wait: the waits and wakes of this file all go
    // through futex.hpp, whose behaviour (EINTR from the vCPU kick signal,
    // spurious returns) the loops above are written for.
    alignas(64) std::atomic<std::uint32_t> writer_{0};
    std::mutex writer_mutex_;
};

} // namespace hv::mmu
