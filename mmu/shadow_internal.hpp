#pragma once
// What the fault path (shadow_mmu.cpp) and the invalidation path
// (shadow_invalidate.cpp) share: ShadowMmu::PolicyLock and two small
// helpers. Internal to those two files.
#include "shadow_mmu.hpp"

#include <atomic>
#include <cstdint>

namespace hv::mmu {

namespace shadow_detail {
inline constexpr std::uint64_t kPage = 4096;
inline std::atomic_ref<std::uint64_t> at(std::uint64_t* e) { return std::atomic_ref<std::uint64_t>(*e); }
} // namespace shadow_detail

// The lock the policy prescribes. A fault holds it while it checks coherence
// and publishes an entry: everything (global), shared (rw) or the entry's leaf
// table (split). A zap batch holds it exclusively: everything (global, rw) or
// one leaf table (split).
//
// Counting shared-line atomics: the global mutex is written by every vCPU
// (lock + unlock = 2). The rw lock's readers write only their own slot
// (ReaderSlotLock), so an rw fault adds none. A split table lock is shared
// only when another vCPU uses the same leaf table, which its shootdown mask
// records: then it counts 2.
class ShadowMmu::PolicyLock {
public:
    enum class Mode { Fault, Zap };
    PolicyLock(ShadowMmu& m, Pfn table, ShadowCounters& c, Mode mode, std::uint32_t vcpu)
        : m_(m), table_(table), mode_(mode), vcpu_(vcpu) {
        switch (m.config_.lock) {
        case LockPolicy::Global:
            m.global_lock_.lock();
            if (mode == Mode::Fault) c.shared_atomics += 2;
            break;
        case LockPolicy::Rw: mode == Mode::Fault ? m.rw_lock_.lock_shared(vcpu) : m.rw_lock_.lock(); break;
        case LockPolicy::Split:
            m.table_locks_[table].lock();
            if (mode == Mode::Fault) {
                const VcpuMask* users = m.table_masks_[table].load(std::memory_order_acquire);
                if (users && users->any_other_than(vcpu)) c.shared_atomics += 2;
            }
            break;
        }
        ++c.lock_acquisitions;
    }
    ~PolicyLock() {
        switch (m_.config_.lock) {
        case LockPolicy::Global: m_.global_lock_.unlock(); break;
        case LockPolicy::Rw: mode_ == Mode::Fault ? m_.rw_lock_.unlock_shared(vcpu_) : m_.rw_lock_.unlock(); break;
        case LockPolicy::Split: m_.table_locks_[table_].unlock(); break;
        }
    }
    PolicyLock(const PolicyLock&) = delete;
    PolicyLock& operator=(const PolicyLock&) = delete;

private:
    ShadowMmu& m_;
    Pfn table_;
    Mode mode_;
    std::uint32_t vcpu_;
};

} // namespace hv::mmu
