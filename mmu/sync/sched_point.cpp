// The calls behind sched_point.hpp: a thread-local pointer to the scheduler
// controlling the calling thread, or nothing.
#include "mmu/sync/sched_point.hpp"

#include <thread>

namespace hv::mmu::sched {

const char* to_string(Point p) {
    switch (p) {
    case Point::Start: return "start";
    case Point::FaultSequenceRead: return "fault-sequence-read";
    case Point::FaultSnapshot: return "fault-snapshot";
    case Point::FaultInstall: return "fault-install";
    case Point::InstallRegistered: return "install-registered";
    case Point::InstallPublished: return "install-published";
    case Point::WalkRegistered: return "walk-registered";
    case Point::InvalidateBegun: return "invalidate-begun";
    case Point::ZapEntryCleared: return "zap-entry-cleared";
    case Point::ZapMasksRead: return "zap-masks-read";
    case Point::ZapBatchCleared: return "zap-batch-cleared";
    case Point::ZapBatchDone: return "zap-batch-done";
    case Point::InvalidateSequenced: return "invalidate-sequenced";
    case Point::MemslotRetired: return "memslot-retired";
    case Point::InvalidateStarted: return "invalidate-started";
    case Point::HostPtesChanged: return "host-ptes-changed";
    case Point::ShootdownPosted: return "shootdown-posted";
    case Point::VcpuAnnounced: return "vcpu-announced";
    case Point::TlbEntriesDropped: return "tlb-entries-dropped";
    case Point::AccessAttempt: return "access-attempt";
    case Point::AccessTranslated: return "access-translated";
    case Point::Program: return "program";
    case Point::Finished: return "finished";
    case Point::LockBusy: return "lock-busy";
    case Point::LockSpin: return "lock-spin";
    case Point::FaultRetry: return "fault-retry";
    case Point::InvalidationActive: return "invalidation-active";
    case Point::AckWait: return "ack-wait";
    case Point::Count: break;
    }
    return "?";
}

namespace detail {

Scheduler* current() { return t_current; }
void set_current(Scheduler* s) { t_current = s; }

void point(Point p) {
    if (t_current) t_current->point(p);
}

void blocked(Point p) {
    if (t_current)
        t_current->blocked(p);
    else
        std::this_thread::yield();
}

void yield(Point p) {
    if (t_current)
        t_current->yield(p);
    else
        std::this_thread::yield();
}

bool wait_timed_out(Point p) { return t_current ? t_current->wait_timed_out(p) : false; }

} // namespace detail
} // namespace hv::mmu::sched
