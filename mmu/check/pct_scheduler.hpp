#pragma once
// A deterministic scheduler for real threads: PCT (probabilistic
// concurrency testing, Burckhardt et al. 2010) driven by a fuzzer's bytes.
//
// run() starts one OS thread per body but lets only one of them run at a
// time: a thread runs until it reaches a scheduling point
// (sched_point.hpp), where the scheduler hands the CPU to the enabled
// thread of highest priority, and waits until it is handed back. The
// priorities are the configuration's; at each change point the running
// thread drops below every configured priority: the i-th change point of
// the list to rank i (the first listed lowest), whichever of them comes
// first in time, as in PCT, so the input decides both where the changes
// fall and which of the dropped threads runs first. A change point is a
// step number (the count of points passed so far, over all threads) or a
// kind point: the n-th step at one kind of point ("the first
// invalidate-sequenced") or every step there ("whoever reaches
// fault-install"), which names a place in a protocol whatever the programs
// did before it. A thread that waits for another (blocked()) is not enabled
// until some thread takes a step; one that retries (yield()) drops below
// every other thread (so the others run until they end or wait, and a retry
// loop cannot starve the thread it waits for); a bounded wait (wait_timed_out()) either
// gives up at once (the configuration's timeout bits: a target that did not
// answer in time) or waits like blocked(), and gives up when no thread is
// enabled or after `bounded_rounds` re-checks that found nothing (the
// others kept running without answering: the bound of a real wait is time). When every thread waits with no bound, that is a deadlock.
//
// Everything that decides the interleaving comes from the configuration,
// so the same configuration and the same bodies give the same interleaving
// every time: the trace (every switch) and its digest say so.
//
// A deadlock or the step limit ends control: every thread is released to
// run freely (points do nothing, waits yield the CPU, bounded waits give
// up) so the run can finish and be reported. A thread that holds the CPU
// for `watchdog` without reaching a point is blocked where the scheduler
// cannot see (a wait that does not go through sched_point.hpp): run()
// prints where and aborts, since nothing can unblock it.
#include "mmu/sync/sched_point.hpp"

#include <array>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <semaphore>
#include <string>
#include <vector>

namespace hv::mmu {

// The step numbered `step` (from 1, over all threads), or, with a `kind`
// other than Count, the step-th step at points of that kind (every step at
// that kind when `step` is 0: whichever thread gets there drops).
struct PctChangePoint {
    std::uint64_t step = 0;
    sched::Point kind = sched::Point::Count;
};

struct PctConfig {
    std::vector<std::int64_t> priorities;     // one per thread, higher runs first; ties go to the lower index
    std::vector<PctChangePoint> change_points; // the i-th gives rank i (see above)
    std::uint32_t timeouts = 0;             // bit i % 32: the i-th bounded wait gives up at once
    std::uint32_t bounded_rounds = 4;       // a bounded wait gives up after this many fruitless re-checks
    std::uint64_t max_steps = 200000;       // then control ends (a livelock, or a program too long)
    std::chrono::milliseconds watchdog{20000};
};

struct PctThread {
    std::string name;
    std::function<void()> body;
};

struct PctSwitch {
    std::uint64_t step;
    std::uint32_t from, to;
    sched::Point at; // where `from` stopped
};

struct PctResult {
    std::uint64_t steps = 0, switches = 0;
    std::uint64_t timeouts = 0;        // bounded waits that gave up by the timeout bits
    std::uint64_t forced_timeouts = 0; // bounded waits that gave up: nothing else could run, or out of rounds
    std::uint64_t digest = 0;          // FNV-1a of the whole trace
    std::vector<PctSwitch> trace;      // the first kMaxTrace switches
    std::string lost_control;          // why control ended early ("" when it did not): deadlock, step limit
    bool deadlock = false;
    std::vector<std::string> errors;   // exceptions that left a thread's body
    std::string describe(const std::vector<PctThread>& threads, std::size_t last = 40) const;
};

class PctScheduler final : public sched::Scheduler {
public:
    static constexpr std::size_t kMaxTrace = 100000;
    // Throws std::invalid_argument when run() gets a number of threads other than priorities.size().
    explicit PctScheduler(PctConfig config);
    ~PctScheduler() override;
    PctScheduler(const PctScheduler&) = delete;
    PctScheduler& operator=(const PctScheduler&) = delete;

    // Runs the bodies to their ends under the schedule; once per scheduler.
    PctResult run(const std::vector<PctThread>& threads);
    // Called (on the thread that found it) when control ends early (every
    // thread waits, the step limit, the watchdog), before the threads run
    // freely: what would otherwise wait or retry forever is released here
    // (the waits a test built, the schedule target's vCPU accesses).
    std::function<void(const std::string& why)> on_lost_control;

    // sched::Scheduler, called by the running thread
    void point(sched::Point p) override;
    void blocked(sched::Point p) override;
    void yield(sched::Point p) override;
    bool wait_timed_out(sched::Point p) override;

private:
    struct Thread {
        std::binary_semaphore go{0};
        std::int64_t priority = 0;
        bool done = false, waiting = false, bounded = false, gave_up = false;
        std::uint32_t rounds = 0; // consecutive calls of wait_timed_out (one wait's re-checks)
        std::atomic<sched::Point> at{sched::Point::Start};
    };
    // The start of every call from a thread: counts the step (resetting the
    // thread's bounded-wait rounds unless `one_wait`); nullptr once control
    // ended (before, or now at the step limit).
    Thread* step(sched::Point p, bool one_wait);
    void body(std::uint32_t index, const std::function<void()>& fn);
    void finish(std::uint32_t index);
    void progress();              // the running thread took a step: every wait may be over
    std::int64_t pick() const;    // the enabled thread of highest priority, or -1
    std::int64_t give_up_bounded(); // a bounded waiter made to give up, or -1
    void record(std::uint32_t from, std::uint32_t to, sched::Point at); // a switch, into the trace and digest
    void switch_to(std::uint32_t next, sched::Point at);
    void end_control(const std::string& why, bool deadlock);
    void touch();
    std::string where() const;

    PctConfig config_;
    std::int64_t lowered_ = 0; // the priority the first change point gives (below every configured one)
    std::array<std::uint64_t, static_cast<std::size_t>(sched::Point::Count)> kind_steps_{}; // steps per kind so far
    std::int64_t bottom_ = 0;  // the next priority yield() gives (below every other)
    std::vector<std::unique_ptr<Thread>> threads_;
    const std::vector<PctThread>* bodies_ = nullptr;
    std::atomic<std::uint32_t> running_{0};
    std::atomic<bool> free_{false};
    std::atomic<std::uint32_t> finished_{0};
    std::binary_semaphore all_done_{0};
    std::atomic<std::int64_t> last_touch_ns_{0};
    std::uint64_t bounded_waits_ = 0;
    PctResult result_;
    bool ran_ = false;
};

} // namespace hv::mmu
