#pragma once
// Scheduling points: where the `schedule` fuzz target's deterministic
// scheduler (PctScheduler, pct_scheduler.hpp) may switch threads.
//
// The MMU, the host model and the software vCPUs call these between every
// two steps of a protocol whose order matters (a fault's snapshots and its
// lookups, its install's mask registration, store and rmap link; a walk's
// registration and its read; an invalidation's start, zap and end; a zap's
// clears and its mask read; a shootdown's post and its look at the target;
// a vCPU's announcement and its look for requests; a host operation between
// its invalidation start and its PTE changes; an access between its TLB
// lookup and its load), so the `schedule` target can run any other thread
// in between, and wherever they wait for another thread (a busy lock, a
// fault told to retry, a shootdown waiting for acknowledgements). The
// comment at each call names the order it separates; swapping the two
// steps around a point (mmu/base/defects.hpp has five such swaps) must be found.
//
// Each call is one load of a thread-local pointer and a branch not taken
// unless a scheduler controls the calling thread (only the `schedule` fuzz
// target and the scheduler's tests install one), so the MMU that benchmarks
// and guests use is the same compiled code the fuzzer runs.
//
// The rules the instrumented code keeps, which make a run deterministic:
// one controlled thread runs at a time, and it never waits in the kernel
// for another controlled thread (every such wait calls blocked() or
// wait_timed_out() instead), so no point lies inside a critical section
// that another controlled thread could need, except for locks whose waits
// go through blocked() (PtLock, ReaderSlotLock via futex_wait, sched::Mutex).
#include <cstdint>
#include <mutex>

namespace hv::mmu::sched {

enum class Point : std::uint8_t {
    // Steps (the thread could go on; the scheduler may prefer another).
    // Between any two steps of a protocol whose order matters there is one,
    // so the scheduler can run any other thread in between; the comment at
    // each call says which order it separates.
    Start,               // a controlled thread's first step
    FaultSequenceRead,   // fault(): memslot generation and sequence read, memslot lookup next
    FaultSnapshot,       // fault(): memslot looked up, host lookup next
    FaultInstall,        // fault(): host translation in hand, before the install
    InstallRegistered,   // install(): in the leaf table's mask (policy lock held), entry store next
    InstallPublished,    // install(): entry stored, rmap link next
    WalkRegistered,      // walk(): in the leaf table's mask, entry read next
    InvalidateBegun,     // invalidate start: range marked in progress, zap next
    ZapEntryCleared,     // zap: an entry cleared (policy lock held), next entry or the mask read next
    ZapMasksRead,        // zap: the batch's masks read (policy lock held), lock drop next
    ZapBatchCleared,     // zap: a batch's entries cleared, lock dropped, shootdown next
    ZapBatchDone,        // zap: the batch's shootdown returned
    InvalidateSequenced, // invalidate end: sequence advanced, in-progress count drop next
    MemslotRetired,      // memslot removal: generation advanced, invalidation and zap next
    InvalidateStarted,   // host operation: invalidation started (secondary zapped)
    HostPtesChanged,     // host operation: PTEs changed, invalidation end next
    ShootdownPosted,     // shootdown: request posted to a vCPU, its announcement read next
    VcpuAnnounced,       // soft vCPU: announced as in guest mode, pending requests read next
    TlbEntriesDropped,   // soft vCPU: TLB entries dropped, leaving their tables' masks next
    AccessAttempt,       // soft vCPU: an access attempt begins (flushes honoured here)
    AccessTranslated,    // soft vCPU: TLB entry in hand, the load/store next
    Program,             // a step of a test program between operations
    Finished,            // a thread's body returned (in traces only)
    // Waits (the thread cannot go on until another one acts).
    LockBusy,            // a lock is held by another thread
    LockSpin,            // a bit lock another thread holds only briefly
    FaultRetry,          // fault() said Retry: an invalidation may have to finish first
    InvalidationActive,  // a memslot change waits for invalidations to end
    AckWait,             // a shootdown waits for a vCPU's acknowledgement (bounded)
    Count
};
const char* to_string(Point p);
constexpr bool is_wait(Point p) { return p >= Point::LockBusy; }

// The scheduler a controlled thread reports to (PctScheduler implements it).
class Scheduler {
public:
    virtual ~Scheduler() = default;
    virtual void point(Point p) = 0;
    virtual void blocked(Point p) = 0;
    virtual void yield(Point p) = 0;
    virtual bool wait_timed_out(Point p) = 0;
};

// point(p): a step; the scheduler may run another thread first.
// blocked(p): the thread cannot go on until another one acts (a busy lock).
// yield(p): the thread retries something another thread is likely to
//   change (a fault told to retry): the others run first (until they end
//   or wait), but when none can, the thread goes on by itself.
// wait_timed_out(p): a bounded wait; true when it should give up now.
//
// The out-of-line calls act on any thread (the scheduler's own tests call
// them directly): on a thread no scheduler controls, point() does nothing,
// blocked() and yield() yield the CPU and wait_timed_out() says false (the
// caller's own clock decides). The inline ones below do nothing at all on
// such a thread: the MMU guards every wait it reports with controlled().
namespace detail {
// The scheduler controlling this thread; constant-initialised, so reading
// it needs no TLS wrapper call.
inline thread_local Scheduler* t_current = nullptr;
Scheduler* current();
void set_current(Scheduler* s); // on the calling thread
void point(Point p);
void blocked(Point p);
void yield(Point p);
bool wait_timed_out(Point p);
} // namespace detail

inline bool controlled() { return detail::t_current != nullptr; }
inline void point(Point p) {
    if (Scheduler* s = detail::t_current) [[unlikely]]
        s->point(p);
}
inline void blocked(Point p) {
    if (Scheduler* s = detail::t_current) s->blocked(p);
}
inline void yield(Point p) {
    if (Scheduler* s = detail::t_current) s->yield(p);
}
inline bool wait_timed_out(Point p) {
    Scheduler* s = detail::t_current;
    return s != nullptr && s->wait_timed_out(p);
}

// std::mutex, whose contended lock() waits through blocked() on a
// controlled thread (for locks held across a scheduling point).
class Mutex {
public:
    void lock() {
        if (controlled()) {
            while (!m_.try_lock()) blocked(Point::LockBusy);
            return;
        }
        m_.lock();
    }
    bool try_lock() { return m_.try_lock(); }
    void unlock() { m_.unlock(); }

private:
    std::mutex m_;
};

} // namespace hv::mmu::sched
