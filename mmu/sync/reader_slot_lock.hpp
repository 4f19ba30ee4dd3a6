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
//
// Mode RareWriters (for locks whose writers are rare: memslot and region
// changes) takes the locked instructions off the readers of vCPU slots too,
// as Linux's percpu-rwsem and KVM's SRCU do for their readers: a vCPU slot
// has one writer (the thread acting as that vCPU), so a reader raises it with
// a plain store and checks the writer flag with a plain load, and the writer,
// after raising its flag, runs a process-wide memory barrier
// (membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED): every running thread of the
// process executes a full barrier) before it looks at the slots. That barrier
// is what orders each reader's store before its load, at a few microseconds
// per writer instead of two locked instructions per reader. Where the
// kernel refuses membarrier, RareWriters behaves as Symmetric.
#include "mmu/sync/futex.hpp"
#include "mmu/sync/hand_over_mutex.hpp"

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>

#include <linux/membarrier.h>
#include <sys/syscall.h>
#include <unistd.h>

namespace hv::mmu {

// True once the process is registered for private expedited membarrier
// (asked once; false when the kernel or a seccomp filter refuses).
inline bool process_barrier_available() {
    static const bool ok = [] {
        const long cmds = ::syscall(SYS_membarrier, MEMBARRIER_CMD_QUERY, 0, 0);
        if (cmds < 0 || !(cmds & MEMBARRIER_CMD_PRIVATE_EXPEDITED)) return false;
        return ::syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
    }();
    return ok;
}

// Every running thread of this process executes a full memory barrier
// before this returns (only after process_barrier_available() said true).
inline void process_barrier() {
    if (::syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0)
        throw std::runtime_error("membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) failed after registering");
}

class ReaderSlotLock {
public:
    enum class Mode { Symmetric, RareWriters };
    // `slots` vCPU slots plus the shared one.
    explicit ReaderSlotLock(std::uint32_t slots, Mode mode = Mode::Symmetric)
        : slots_(slots), asymmetric_(mode == Mode::RareWriters && process_barrier_available()),
          readers_(std::make_unique<Slot[]>(slots + 1)) {}

    // True when readers of vCPU slots use no locked instruction (see Mode).
    bool asymmetric() const { return asymmetric_; }

    std::uint32_t shared_slot() const { return slots_; }

    // `slot` is a vCPU index below slots(), or shared_slot() (or anything
    // larger, which means the same). A vCPU slot is used by one thread at a
    // time (the vCPU's).
    void lock_shared(std::uint32_t slot) {
        if (asymmetric_ && slot < slots_) return lock_own(readers_[slot].count);
        auto& mine = readers_[slot < slots_ ? slot : slots_].count;
        for (bool waited = false;; waited = true) {
            mine.fetch_add(1, std::memory_order_seq_cst);
            if (!writer_.load(std::memory_order_seq_cst)) return admit(waited);
            // A writer is in (or coming): step back so it can finish, and
            // wait for it.
            unlock_shared(slot);
            wait_for_writer();
        }
    }
    void unlock_shared(std::uint32_t slot) {
        if (asymmetric_ && slot < slots_) return unlock_own(readers_[slot].count);
        auto& mine = readers_[slot < slots_ ? slot : slots_].count;
        // The writer raised its flag before it looked at our slot, and the
        // RMW orders our read of the flag after our release: a writer that
        // sleeps on our slot is seen here and woken.
        if (mine.fetch_sub(1, std::memory_order_seq_cst) == 1 && writer_.load(std::memory_order_seq_cst) != 0)
            futex_wake_all(mine);
    }

    void lock() {
        writer_mutex_.lock();
        writer_.store(kWriter, std::memory_order_seq_cst);
        // Every reader that raised its slot before this point is seen below;
        // every one that raises it after sees our flag.
        if (asymmetric_) process_barrier();
        // Sleep on each busy slot until its last reader leaves: a reader may
        // be preempted inside, and spinning would only take its CPU.
        for (std::uint32_t i = 0; i <= slots_; ++i)
            for (std::uint32_t n = readers_[i].count.load(std::memory_order_seq_cst); n != 0;
                 n = readers_[i].count.load(std::memory_order_seq_cst))
                futex_wait(readers_[i].count, n);
    }
    void unlock() { release_writer(); }
    // Releases the write lock; when readers were waiting for it, returns
    // only once one of them got in (or kHandOverLimit passed): for a writer
    // that takes the lock again at once, a zap between two batches (see
    // hand_over_mutex.hpp).
    void unlock_and_hand_over(std::chrono::microseconds limit = kHandOverLimit) {
        const std::uint64_t seen = admitted_.load(std::memory_order_acquire);
        if (release_writer()) wait_for_admission(admitted_, seen, limit);
    }
    // True while a reader sleeps waiting for the writer; readers that got
    // in after waiting for a writer, so far (tests).
    bool reader_sleeps() const { return writer_.load(std::memory_order_acquire) == kWriterWithSleepers; }
    std::uint64_t admitted() const { return admitted_.load(std::memory_order_acquire); }

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
    static constexpr std::uint32_t kWriter = 1, kWriterWithSleepers = 2;
    // Returns true when a reader slept waiting for us (and was woken).
    bool release_writer() {
        // A wake-up system call only when a reader sleeps: a zap takes and
        // drops this lock once per batch.
        const bool sleepers = writer_.exchange(0, std::memory_order_release) == kWriterWithSleepers;
        if (sleepers) futex_wake_all(writer_);
        writer_mutex_.unlock();
        return sleepers;
    }
    // A reader that had to wait for a writer is in: counted, on a line of
    // its own, so that a writer handing the lock over sees it (the slow
    // path only: a reader that did not wait writes nothing shared).
    void admit(bool waited) {
        if (waited) admitted_.fetch_add(1, std::memory_order_release);
    }
    // Sleeps until no writer holds or waits for the lock, first marking that
    // a reader sleeps so that the writer's unlock wakes it.
    void wait_for_writer() {
        for (std::uint32_t w = writer_.load(std::memory_order_acquire); w != 0;
             w = writer_.load(std::memory_order_acquire)) {
            if (w == kWriter &&
                !writer_.compare_exchange_strong(w, kWriterWithSleepers, std::memory_order_acquire))
                continue;
            futex_wait(writer_, kWriterWithSleepers);
        }
    }

    // RareWriters, a vCPU slot: plain stores and loads (the slot has one
    // writer); the writer's process_barrier() orders them (see Mode).
    void lock_own(std::atomic<std::uint32_t>& mine) {
        for (bool waited = false;; waited = true) {
            mine.store(mine.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
            std::atomic_signal_fence(std::memory_order_seq_cst); // keep the compiler from reordering
            if (!writer_.load(std::memory_order_acquire)) return admit(waited);
            unlock_own(mine);
            wait_for_writer();
        }
    }
    void unlock_own(std::atomic<std::uint32_t>& mine) {
        const std::uint32_t n = mine.load(std::memory_order_relaxed) - 1;
        mine.store(n, std::memory_order_release);
        std::atomic_signal_fence(std::memory_order_seq_cst);
        // A writer that saw us inside sleeps on the slot until it changes.
        if (n == 0 && writer_.load(std::memory_order_relaxed) != 0) futex_wake_all(mine);
    }

    struct alignas(64) Slot {
        std::atomic<std::uint32_t> count{0};
    };
    std::uint32_t slots_;
    bool asymmetric_;
    std::unique_ptr<Slot[]> readers_;
    // kWriter while a writer holds or waits for the lock, kWriterWithSleepers
    // once a reader sleeps waiting for it; 0 otherwise. A futex word rather than
    // std::atomic<bool>::wait: the waits and wakes of this file all go
    // through futex.hpp, whose behaviour (EINTR from the vCPU kick signal,
    // spurious returns) the loops above are written for.
    alignas(64) std::atomic<std::uint32_t> writer_{0};
    std::mutex writer_mutex_;
    alignas(64) std::atomic<std::uint64_t> admitted_{0}; // see admit()
};

} // namespace hv::mmu
