// PctScheduler: see pct_scheduler.hpp. All scheduling state is touched only
// by the running thread (or by run() before the first and after the last
// hand-over); the semaphores of the hand-overs order it between threads.
#include "mmu/check/pct_scheduler.hpp"

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <mutex>
#include <stdexcept>
#include <thread>

namespace hv::mmu {

namespace {
std::int64_t now_ns() {
    return std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
        .count();
}
std::mutex g_errors_mutex; // exceptions may leave bodies concurrently once control ended
} // namespace

std::string PctResult::describe(const std::vector<PctThread>& threads, std::size_t last) const {
    const auto name = [&](std::uint32_t i) { return i < threads.size() ? threads[i].name : std::to_string(i); };
    std::string s = std::to_string(steps) + " steps, " + std::to_string(switches) + " switches, " +
                    std::to_string(timeouts) + " timeouts by the input, " + std::to_string(forced_timeouts) +
                    " forced; trace digest " + std::to_string(digest) + "\n";
    if (!lost_control.empty()) s += "control ended early: " + lost_control + "\n";
    const std::size_t from = trace.size() > last ? trace.size() - last : 0;
    if (from) s += "  ... " + std::to_string(from) + " earlier switches\n";
    for (std::size_t i = from; i < trace.size(); ++i)
        s += "  step " + std::to_string(trace[i].step) + ": " + name(trace[i].from) + " at " +
             sched::to_string(trace[i].at) + " -> " + name(trace[i].to) + "\n";
    for (const std::string& e : errors) s += "  exception: " + e + "\n";
    return s;
}

PctScheduler::PctScheduler(PctConfig config) : config_(std::move(config)) {
    std::int64_t lowest = 0;
    for (std::int64_t p : config_.priorities) lowest = std::min(lowest, p);
    lowered_ = lowest - static_cast<std::int64_t>(config_.change_points.size());
    bottom_ = lowered_ - 1;
}

PctScheduler::~PctScheduler() = default;

void PctScheduler::touch() { last_touch_ns_.store(now_ns(), std::memory_order_relaxed); }

std::int64_t PctScheduler::pick() const {
    std::int64_t best = -1;
    for (std::uint32_t i = 0; i < threads_.size(); ++i) {
        const Thread& t = *threads_[i];
        if (t.done || t.waiting) continue;
        if (best < 0 || t.priority > threads_[best]->priority) best = i;
    }
    return best;
}

std::int64_t PctScheduler::give_up_bounded() {
    std::int64_t best = -1;
    for (std::uint32_t i = 0; i < threads_.size(); ++i) {
        const Thread& t = *threads_[i];
        if (t.done || !t.waiting || !t.bounded) continue;
        if (best < 0 || t.priority > threads_[best]->priority) best = i;
    }
    if (best >= 0) {
        Thread& t = *threads_[best];
        t.waiting = false;
        t.gave_up = true;
        ++result_.forced_timeouts;
    }
    return best;
}

void PctScheduler::progress() {
    for (auto& t : threads_) t->waiting = false;
}

void PctScheduler::record(std::uint32_t from, std::uint32_t to, sched::Point at) {
    ++result_.switches;
    const PctSwitch sw{result_.steps, from, to, at};
    for (const std::uint64_t v : {sw.step, std::uint64_t{sw.from}, std::uint64_t{sw.to}, std::uint64_t(sw.at)})
        for (int b = 0; b < 8; ++b) result_.digest = (result_.digest ^ ((v >> (8 * b)) & 0xff)) * 0x100000001b3ull;
    if (result_.trace.size() < kMaxTrace) result_.trace.push_back(sw);
}

void PctScheduler::switch_to(std::uint32_t next, sched::Point at) {
    const std::uint32_t me = running_.load(std::memory_order_relaxed);
    if (next == me) return;
    record(me, next, at);
    running_.store(next, std::memory_order_relaxed);
    threads_[next]->go.release();
    threads_[me]->go.acquire();
    touch();
}

void PctScheduler::end_control(const std::string& why, bool deadlock) {
    result_.lost_control = why;
    result_.deadlock = deadlock;
    if (on_lost_control) on_lost_control(why);
    free_.store(true, std::memory_order_seq_cst);
    const std::uint32_t me = running_.load(std::memory_order_relaxed);
    // Every other unfinished thread waits on its semaphore (at its start or
    // in switch_to): one release each lets it run freely.
    for (std::uint32_t i = 0; i < threads_.size(); ++i)
        if (i != me && !threads_[i]->done) threads_[i]->go.release();
}

std::string PctScheduler::where() const {
    std::string s;
    for (std::uint32_t i = 0; i < threads_.size(); ++i) {
        const Thread& t = *threads_[i];
        if (t.done) continue;
        if (!s.empty()) s += ", ";
        s += (*bodies_)[i].name + " at " + sched::to_string(t.at.load(std::memory_order_relaxed));
    }
    return s;
}

PctScheduler::Thread* PctScheduler::step(sched::Point p, bool one_wait) {
    if (free_.load(std::memory_order_relaxed)) return nullptr;
    touch();
    Thread& me = *threads_[running_.load(std::memory_order_relaxed)];
    me.at.store(p, std::memory_order_relaxed);
    if (!one_wait) me.rounds = 0;
    if (++result_.steps > config_.max_steps) {
        end_control("more than " + std::to_string(config_.max_steps) + " steps (" + where() + ")", false);
        return nullptr;
    }
    return &me;
}

void PctScheduler::point(sched::Point p) {
    Thread* me = step(p, false);
    if (!me) return;
    progress();
    const std::uint64_t nth = ++kind_steps_[static_cast<std::size_t>(p)];
    for (std::size_t i = 0; i < config_.change_points.size(); ++i) {
        const PctChangePoint& c = config_.change_points[i];
        if (c.kind == sched::Point::Count ? c.step == result_.steps : c.kind == p && (c.step == 0 || c.step == nth))
            me->priority = lowered_ + static_cast<std::int64_t>(i);
    }
    switch_to(static_cast<std::uint32_t>(pick()), p);
}

void PctScheduler::blocked(sched::Point p) {
    Thread* me = step(p, false);
    if (!me) {
        std::this_thread::yield();
        return;
    }
    me->waiting = true;
    me->bounded = false;
    std::int64_t next = pick();
    if (next < 0) next = give_up_bounded();
    if (next < 0) {
        end_control("deadlock: every thread waits (" + where() + ")", true);
        std::this_thread::yield();
        return;
    }
    switch_to(static_cast<std::uint32_t>(next), p);
}

void PctScheduler::yield(sched::Point p) {
    Thread* me = step(p, false);
    if (!me) {
        std::this_thread::yield();
        return;
    }
    // Below every other thread, for good: the others run until they end or
    // wait, so a retry loop cannot starve the thread it waits for (two
    // vCPUs retrying against an invalidation in progress would otherwise
    // hand the CPU back and forth forever).
    me->priority = bottom_--;
    switch_to(static_cast<std::uint32_t>(pick()), p);
}

bool PctScheduler::wait_timed_out(sched::Point p) {
    Thread* t = step(p, true);
    if (!t) return true; // control ended: waits give up (a shootdown leaves its requests pending)
    Thread& me = *t;
    if (++me.rounds > config_.bounded_rounds) {
        me.rounds = 0;
        ++result_.forced_timeouts;
        return true;
    }
    if ((config_.timeouts >> (bounded_waits_++ % 32)) & 1) {
        ++result_.timeouts;
        return true;
    }
    me.waiting = true;
    me.bounded = true;
    me.gave_up = false;
    std::int64_t next = pick();
    if (next < 0) next = give_up_bounded(); // possibly this thread itself
    switch_to(static_cast<std::uint32_t>(next), p);
    me.bounded = false;
    if (free_.load(std::memory_order_relaxed)) return true;
    const bool gave_up = me.gave_up;
    me.gave_up = false;
    return gave_up;
}

void PctScheduler::body(std::uint32_t index, const std::function<void()>& fn) {
    sched::detail::set_current(this);
    threads_[index]->go.acquire();
    touch();
    try {
        fn();
    } catch (const std::exception& e) {
        std::lock_guard lock(g_errors_mutex);
        result_.errors.push_back((*bodies_)[index].name + ": " + e.what());
    } catch (...) {
        std::lock_guard lock(g_errors_mutex);
        result_.errors.push_back((*bodies_)[index].name + ": an exception that is not a std::exception");
    }
    finish(index);
    sched::detail::set_current(nullptr);
}

void PctScheduler::finish(std::uint32_t index) {
    const std::uint32_t n = static_cast<std::uint32_t>(threads_.size());
    if (free_.load(std::memory_order_seq_cst)) {
        threads_[index]->done = true; // only read by this thread from now on
        if (finished_.fetch_add(1) + 1 == n) all_done_.release();
        return;
    }
    threads_[index]->done = true;
    progress();
    if (finished_.fetch_add(1) + 1 == n) {
        all_done_.release();
        return;
    }
    const std::int64_t next = pick(); // everyone's waits were just cleared: someone is enabled
    record(index, static_cast<std::uint32_t>(next), sched::Point::Finished);
    running_.store(static_cast<std::uint32_t>(next), std::memory_order_relaxed);
    threads_[next]->go.release();
}

PctResult PctScheduler::run(const std::vector<PctThread>& threads) {
    if (ran_) throw std::logic_error("PctScheduler::run: a scheduler runs once");
    ran_ = true;
    if (threads.empty() || threads.size() != config_.priorities.size())
        throw std::invalid_argument("PctScheduler::run: expected " + std::to_string(config_.priorities.size()) +
                                    " threads (one per priority), got " + std::to_string(threads.size()));
    bodies_ = &threads;
    result_.digest = 0xcbf29ce484222325ull; // FNV-1a's offset basis
    for (std::size_t i = 0; i < threads.size(); ++i) {
        threads_.push_back(std::make_unique<Thread>());
        threads_.back()->priority = config_.priorities[i];
    }
    std::vector<std::thread> os;
    os.reserve(threads.size());
    for (std::uint32_t i = 0; i < threads.size(); ++i)
        os.emplace_back([this, i, &threads] { body(i, threads[i].body); });
    const std::uint32_t first = static_cast<std::uint32_t>(pick());
    running_.store(first, std::memory_order_relaxed);
    touch();
    threads_[first]->go.release();
    while (!all_done_.try_acquire_for(std::chrono::milliseconds(100))) {
        if (free_.load(std::memory_order_seq_cst)) continue;
        const std::int64_t idle = now_ns() - last_touch_ns_.load(std::memory_order_relaxed);
        if (idle > std::chrono::duration_cast<std::chrono::nanoseconds>(config_.watchdog).count()) {
            const std::uint32_t r = running_.load(std::memory_order_relaxed);
            std::fprintf(stderr,
                         "PctScheduler: %s has run %.1f s since its last scheduling point (%s) without reaching "
                         "another: it waits where the scheduler cannot see (a wait not made through "
                         "sched_point.hpp), and no other thread may run to release it.\n%s",
                         threads[r].name.c_str(), static_cast<double>(idle) / 1e9,
                         sched::to_string(threads_[r]->at.load(std::memory_order_relaxed)),
                         result_.describe(threads).c_str());
            std::abort();
        }
    }
    for (auto& t : os) t.join();
    bodies_ = nullptr;
    return result_;
}

} // namespace hv::mmu
