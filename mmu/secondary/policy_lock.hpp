#pragma once
// ShadowMmu::PolicyLock: the lock a fault or a zap batch holds, and what
// the lock policy implies for the writers of an entry and of the rmap.
// Internal to the shadow MMU's sources.
#include "mmu/secondary/shadow_mmu.hpp"

#include <atomic>
#include <cstdint>

namespace hv::mmu {

// ThreadSanitizer does not model std::atomic_thread_fence (GCC refuses to
// compile one under -fsanitize=thread): the zap then clears each entry with a
// sequentially consistent exchange instead of relaxed stores and one fence.
#if defined(__SANITIZE_THREAD__)
#define HV_SHADOW_NO_FENCES 1
#elif defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define HV_SHADOW_NO_FENCES 1
#endif
#endif

// The lock the policy prescribes. A fault holds it while it checks coherence
// and publishes an entry: everything (global), shared (rw) or the entry's leaf
// table (split). A zap batch holds it exclusively: everything (global, rw) or
// one leaf table (split).
//
// Counting shared-line atomics: the global mutex is written by every vCPU
// and every zap (lock + unlock = 2). The rw lock's readers write only their
// own slot (ReaderSlotLock), so an rw fault adds none; its writer (a zap)
// writes only the writer side (a mutex only writers take, a flag readers
// read). A split table lock counts 2 when another vCPU uses the same leaf
// table (its shootdown mask records that), or when the lock's line is not
// the vCPU's own (the locks of 16 neighbouring tables share a line: see
// ShadowCounters); a zap's always counts 2 (the table's vCPUs write it).
class ShadowMmu::PolicyLock {
public:
    enum class Mode { Fault, Zap };
    PolicyLock(ShadowMmu& m, Pfn table, ShadowCounters& c, Mode mode, std::uint32_t vcpu)
        : m_(m), table_(table), mode_(mode), vcpu_(vcpu) {
        switch (m.config_.lock) {
        case LockPolicy::Global:
            m.global_lock_.lock();
            c.shared_atomics += 2; // every fault writes it too
            break;
        case LockPolicy::Rw: mode == Mode::Fault ? m.rw_lock_.lock_shared(vcpu) : m.rw_lock_.lock(); break;
        case LockPolicy::Split:
            m.table_locks_[table].lock();
            if (mode == Mode::Fault) {
                const VcpuMask* users = m.table_masks_[table].load(std::memory_order_acquire);
                if (!m.line_private(table, vcpu) || (users && users->any_other_than(vcpu))) c.shared_atomics += 2;
            } else {
                c.shared_atomics += 2; // a zap shares the table's lock with the table's vCPUs
            }
            break;
        }
        ++c.lock_acquisitions;
    }
    // A zap batch hands the lock over to a fault waiting for it before the
    // next batch takes it again (hand_over_mutex.hpp): otherwise a fault
    // that meets a zap waits for the whole zap, whatever the batch. Split
    // needs none: a zap holds one leaf table's lock at a time.
    ~PolicyLock() {
        switch (m_.config_.lock) {
        case LockPolicy::Global:
            mode_ == Mode::Fault ? m_.global_lock_.unlock() : m_.global_lock_.unlock_and_hand_over();
            break;
        case LockPolicy::Rw:
            mode_ == Mode::Fault ? m_.rw_lock_.unlock_shared(vcpu_) : m_.rw_lock_.unlock_and_hand_over();
            break;
        case LockPolicy::Split: m_.table_locks_[table_].unlock(); break;
        }
    }
    PolicyLock(const PolicyLock&) = delete;
    PolicyLock& operator=(const PolicyLock&) = delete;

    // Split holds one leaf table: a zap batch ends at that table's end.
    // Global and rw hold everything: a batch goes on across tables.
    bool holds_one_table() const { return m_.config_.lock == LockPolicy::Split; }
    // Global and split faults hold the only lock under which anything
    // installs into this table: the entry is published with a plain store
    // (aging's lock-free accessed-bit update either lands before it and is
    // overwritten, or fails on it and retries on the new entry). Rw faults
    // install side by side under the shared lock: a compare-exchange.
    bool sole_installer() const { return m_.config_.lock != LockPolicy::Rw; }
    // Who else may write an rmap head while this lock is held. A global
    // fault excludes every other rmap writer (zaps too take the mutex);
    // split and rw faults do not (a fault into another table, or beside
    // this one, may map the frame). Global and rw zaps hold the lock every
    // install holds (and zaps are serialised by zap_mutex_), so an inline
    // link goes with a plain store; a split zap holds one table's lock while
    // faults into other tables may map the same frame.
    Rmap::Writers rmap_writers() const {
        const bool excluded = mode_ == Mode::Fault ? m_.config_.lock == LockPolicy::Global
                                                   : m_.config_.lock != LockPolicy::Split;
        return excluded ? Rmap::Writers::Excluded : Rmap::Writers::Concurrent;
    }

private:
    ShadowMmu& m_;
    Pfn table_;
    Mode mode_;
    std::uint32_t vcpu_;
};

} // namespace hv::mmu
