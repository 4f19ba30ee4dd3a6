#include "shadow_mmu.hpp"

#include "hex.hpp"

#include <algorithm>
#include <cstdio>
#include <stdexcept>
#include <string>
#include <thread>

namespace hv::mmu {
namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kTableSpan = 512 * kPage;

std::atomic_ref<std::uint64_t> at(std::uint64_t* e) { return std::atomic_ref<std::uint64_t>(*e); }

} // namespace

const char* to_string(LockPolicy p) {
    switch (p) {
    case LockPolicy::Global: return "global";
    case LockPolicy::Rw: return "rw";
    case LockPolicy::Split: return "split";
    }
    return "?";
}
const char* to_string(CoherencePolicy p) {
    switch (p) {
    case CoherencePolicy::Seq: return "seq";
    case CoherencePolicy::PtLock: return "ptlock";
    case CoherencePolicy::RangeActive: return "range-active";
    }
    return "?";
}
const char* to_string(FaultResult r) {
    switch (r) {
    case FaultResult::Installed: return "installed";
    case FaultResult::Retry: return "retry";
    case FaultResult::NoMemslot: return "no-memslot";
    case FaultResult::Refused: return "refused";
    case FaultResult::OutOfFrames: return "out-of-frames";
    }
    return "?";
}

ShadowCounters& ShadowCounters::operator+=(const ShadowCounters& o) {
    faults += o.faults; installs += o.installs; retries += o.retries; no_memslot += o.no_memslot;
    refused += o.refused; out_of_frames += o.out_of_frames; lock_acquisitions += o.lock_acquisitions;
    shared_atomics += o.shared_atomics; host_lock_acquisitions += o.host_lock_acquisitions;
    host_shared_atomics += o.host_shared_atomics; zaps += o.zaps; batches += o.batches; shootdowns += o.shootdowns;
    shootdown_targets += o.shootdown_targets; walk_registrations += o.walk_registrations; max_batch = std::max(max_batch, o.max_batch);
    return *this;
}

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

namespace {
ShadowConfig validated(ShadowConfig config) {
    if (config.vcpus == 0 || config.vcpus > kMaxVcpus)
        throw std::invalid_argument("ShadowMmu: vcpus must be 1.." + std::to_string(kMaxVcpus) + ", got " +
                                    std::to_string(config.vcpus));
    return config;
}
} // namespace

ShadowMmu::ShadowMmu(HostAddressSpace& host, ShadowConfig config, TlbShootdown* shootdown)
    : host_(host), config_(validated(config)), shootdown_(shootdown),
      table_([&] {
          auto t = RadixTable<Pte>::create(host.frames());
          if (!t) throw std::runtime_error("ShadowMmu: no frame left for the root table");
          return std::move(*t);
      }()),
      rmap_(host.frames().frame_count()), slots_lock_(config_.vcpus), rw_lock_(config_.vcpus),
      table_locks_(std::make_unique<PtLock[]>(host.frames().frame_count())),
      table_masks_(std::make_unique<std::atomic<VcpuMask*>[]>(host.frames().frame_count())),
      counters_(std::make_unique<PaddedCounters[]>(config_.vcpus + 1)) {
    host_.notifiers().subscribe(*this);
    subscribed_ = true;
}

ShadowMmu::~ShadowMmu() {
    if (subscribed_ && !host_.notifiers().released()) host_.notifiers().unsubscribe(*this);
    shootdown_ = nullptr; // its owner may be gone; nobody can use our entries any more
    const GuestRange everything{0, MemslotTable::kAddressLimit};
    zap_ranges(std::span(&everything, 1), zap_slot());
    for (Pfn p = 0; p < host_.frames().frame_count(); ++p) delete table_masks_[p].load();
}

VcpuMask& ShadowMmu::mask_for_table(Pfn table) {
    VcpuMask* m = table_masks_[table].load(std::memory_order_acquire);
    if (m) return *m;
    auto* fresh = new VcpuMask;
    if (table_masks_[table].compare_exchange_strong(m, fresh, std::memory_order_acq_rel)) return *fresh;
    delete fresh;
    return *m;
}

// A new slot must not appear while an invalidation runs: its guest range
// is not in the hull the invalidation announced, so a fault through it
// could install a page the host is changing. Like KVM, wait until no
// invalidation is active (holding zap_mutex_, so none starts meanwhile).
void ShadowMmu::wait_no_invalidation() {
    while (invalidate_in_progress_.load(std::memory_order_seq_cst) != 0) std::this_thread::yield();
}

void ShadowMmu::add_memslot(const Memslot& slot) {
    std::lock_guard zaps(zap_mutex_);
    wait_no_invalidation();
    std::unique_lock lock(slots_lock_);
    memslots_.add(slot);
}

void ShadowMmu::alias_memslot(std::uint32_t existing, std::uint32_t id, std::uint64_t guest_start) {
    std::lock_guard zaps(zap_mutex_);
    wait_no_invalidation();
    std::unique_lock lock(slots_lock_);
    memslots_.alias(existing, id, guest_start);
}

void ShadowMmu::remove_memslot(std::uint32_t id) {
    // Like an invalidation: faults that looked the slot up before must retry.
    // Lock order everywhere: zap_mutex_, then slots_lock_, then the zap locks.
    std::lock_guard zaps(zap_mutex_);
    std::unique_lock lock(slots_lock_);
    const Memslot s = memslots_.remove(id); // throws for an unknown id, before anything changed
    slots_gen_.fetch_add(1);                // before the zap: see fault()
    const GuestRange r{s.guest_start, s.guest_end()};
    begin_invalidation(std::span(&r, 1));
    zap_ranges(std::span(&r, 1), zap_slot());
    invalidate_seq_.fetch_add(1);
    invalidate_in_progress_.fetch_sub(1);
}

std::vector<Memslot> ShadowMmu::memslots() const {
    ReaderSlotLock::SharedGuard lock(slots_lock_, slots_lock_.shared_slot());
    return memslots_.slots();
}

std::uint64_t ShadowMmu::entry(std::uint64_t ga) const {
    auto slot = table_.find_leaf(ga);
    if (!slot) return 0;
    const std::uint64_t e = at(slot->entry).load(std::memory_order_acquire);
    return Pte::present(e) ? e : 0;
}

std::uint64_t ShadowMmu::walk(std::uint32_t vcpu, std::uint64_t guest_address) {
    auto leaf = table_.find_leaf(guest_address);
    if (!leaf) return 0;
    // Register before reading, both sequentially consistent: a zap exchanges
    // the entry and then reads the mask, so either it sees our bit or we
    // read the cleared entry.
    if (mask_for_table(leaf->table).set(vcpu)) {
        ShadowCounters& c = counters_[vcpu].c;
        ++c.walk_registrations;
        ++c.shared_atomics;
    }
    const std::uint64_t e = at(leaf->entry).load(std::memory_order_seq_cst);
    return Pte::present(e) ? e : 0;
}

FaultResult ShadowMmu::fault(std::uint32_t vcpu, std::uint64_t guest_address, Access access) {
    ShadowCounters& c = counters_[vcpu].c;
    ++c.faults;
    const std::uint64_t ga = guest_address & ~(kPage - 1);
    // Snapshots before the memslot lookup and the host lookup: a memslot
    // removal or an invalidation that completes between them and the
    // install changes one of them, and the install is refused.
    const std::uint64_t slots_gen = slots_gen_.load(std::memory_order_acquire);
    const std::uint64_t seq = invalidate_seq_.load(std::memory_order_acquire);
    Memslot slot;
    {
        ReaderSlotLock::SharedGuard lock(slots_lock_, vcpu);
        const Memslot* s = memslots_.find_guest(ga);
        if (!s) {
            ++c.no_memslot;
            return FaultResult::NoMemslot;
        }
        slot = *s;
    }
    if (access == Access::Write && !slot.writable) {
        ++c.refused;
        return FaultResult::Refused;
    }
    const std::uint64_t ha = slot.host_start + (ga - slot.guest_start);
    if (config_.coherence == CoherencePolicy::RangeActive &&
        invalidate_in_progress_.load(std::memory_order_acquire) != 0) {
        ++c.retries;
        return FaultResult::Retry;
    }

    if (config_.coherence == CoherencePolicy::PtLock) {
        // Resolve the host PTE and install while holding its PT lock; fault
        // the host page in (without locks) when it is not usable yet.
        for (int attempt = 0; attempt < 3; ++attempt) {
            {
                auto guard = host_.lock_pte(ha, vcpu);
                ++c.host_lock_acquisitions;
                if (guard) {
                    const std::uint64_t pte = guard.pte();
                    if (X86PteFormat::present(pte) && (access == Access::Read || X86PteFormat::writable(pte))) {
                        if (after_host_lookup) after_host_lookup(vcpu, ga);
                        return install(vcpu, ga, slot, {X86PteFormat::pfn(pte), X86PteFormat::writable(pte)}, access,
                                       {seq, slots_gen}, ha);
                    }
                }
            }
            const HostFaultResult r = host_.fault(ha, access, vcpu);
            c.host_lock_acquisitions += r.locks;
            c.host_shared_atomics += r.shared_atomics;
            if (r.status == HostFaultStatus::OutOfFrames) {
                ++c.out_of_frames;
                return FaultResult::OutOfFrames;
            }
            if (r.status != HostFaultStatus::Mapped) {
                ++c.refused;
                return FaultResult::Refused;
            }
        }
        ++c.retries;
        return FaultResult::Retry;
    }

    const HostFaultResult r = host_.fault(ha, access, vcpu);
    c.host_lock_acquisitions += r.locks;
    c.host_shared_atomics += r.shared_atomics;
    if (r.status == HostFaultStatus::OutOfFrames) {
        ++c.out_of_frames;
        return FaultResult::OutOfFrames;
    }
    if (r.status != HostFaultStatus::Mapped) {
        ++c.refused;
        return FaultResult::Refused;
    }
    if (after_host_lookup) after_host_lookup(vcpu, ga);
    return install(vcpu, ga, slot, r.translation, access, {seq, slots_gen}, ha);
}

FaultResult ShadowMmu::install(std::uint32_t vcpu, std::uint64_t ga, const Memslot& slot, HostTranslation t,
                               Access access, Snapshot snap, std::uint64_t ha) {
    ShadowCounters& c = counters_[vcpu].c;
    auto leaf = table_.ensure_leaf(ga);
    if (!leaf) {
        ++c.out_of_frames;
        return FaultResult::OutOfFrames;
    }
    PolicyLock lock(*this, leaf->table, c, PolicyLock::Mode::Fault, vcpu);
    // An invalidation in progress refuses installs in the hull of its guest
    // ranges (as KVM's range check does) -- everywhere under range-active,
    // whose point is backing off from any active range. Every policy refuses
    // an install across a memslot removal (the slot it looked up may be
    // gone); the sequence number is the seq policy's.
    const bool in_progress = config_.coherence == CoherencePolicy::RangeActive
                                 ? invalidate_in_progress_.load(std::memory_order_seq_cst) != 0
                                 : invalidation_covers(ga);
    bool stale = in_progress || slots_gen_.load(std::memory_order_acquire) != snap.slots_gen;
    if (config_.coherence == CoherencePolicy::Seq)
        stale = stale || invalidate_seq_.load(std::memory_order_acquire) != snap.seq;
    if (config_.coherence == CoherencePolicy::RangeActive && !stale) {
        const auto now = host_.lookup(ha);
        stale = !now || now->pfn != t.pfn || now->writable != t.writable;
    }
    if (stale) {
        ++c.retries;
        return FaultResult::Retry;
    }
    const bool writable = t.writable && slot.writable;
    if (access == Access::Write && !writable) {
        ++c.refused;
        return FaultResult::Refused;
    }
    Perms perms{};
    perms.read = true;
    perms.write = writable;
    perms.exec = true;
    perms.user = true;
    // The fault is an access: the entry starts young, as the CPU would mark it.
    const std::uint64_t fresh = Pte::with_accessed(Pte::make_leaf(t.pfn, perms), true);
    // Join the table's shootdown targets before publishing: a zap that sees
    // the entry (its exchange acquires our release) then also sees the bit.
    if (mask_for_table(leaf->table).set(vcpu)) ++c.shared_atomics;
    auto entry = at(leaf->entry);
    std::uint64_t old = entry.load(std::memory_order_acquire);
    const std::uint64_t gfn = ga >> 12;
    for (;;) {
        if (Pte::present(old) && Pte::pfn(old) == t.pfn && (Pte::writable(old) || !writable)) break; // already there
        if (entry.compare_exchange_weak(old, fresh, std::memory_order_acq_rel, std::memory_order_acquire)) {
            if (Pte::present(old) && Pte::pfn(old) != t.pfn) {
                rmap_.remove(Pte::pfn(old), gfn);
                rmap_.add(t.pfn, gfn);
                c.lock_acquisitions += 2;
            } else if (!Pte::present(old)) {
                rmap_.add(t.pfn, gfn);
                ++c.lock_acquisitions;
            }
            ++c.installs;
            break;
        }
    }
    return FaultResult::Installed;
}

std::size_t ShadowMmu::zap_ranges(std::span<const GuestRange> ranges, ShadowCounters& c) {
    std::size_t total = 0;
    const std::size_t batch = config_.batch;
    for (const GuestRange& r : ranges) {
        // Leaf tables are never freed while the MMU lives, so the list stays valid.
        std::vector<std::pair<Pfn, std::uint64_t>> tables;
        table_.for_each_leaf_table(r.start, r.end, [&](Pfn pfn, std::uint64_t start) { tables.push_back({pfn, start}); });
        std::size_t t = 0;
        std::uint64_t cursor = r.start;
        while (t < tables.size()) {
            const Pfn table = tables[t].first;
            const std::uint64_t table_end = std::min(r.end, tables[t].second + kTableSpan);
            const std::uint64_t from = std::max(cursor, tables[t].second);
            VcpuMask targets;
            std::vector<std::uint64_t> pages;
            std::uint64_t next;
            {
                PolicyLock lock(*this, table, c, PolicyLock::Mode::Zap, config_.vcpus);
                // Global and rw hold everything: keep going across tables up
                // to the batch; split holds one table at a time.
                const std::uint64_t stop = config_.lock == LockPolicy::Split ? table_end : r.end;
                next = table_.for_each_leaf(from, stop, batch, [&](std::uint64_t addr, const auto& slot) {
                    const std::uint64_t old = at(slot.entry).exchange(0, std::memory_order_seq_cst);
                    if (!Pte::present(old)) return;
                    rmap_.remove(Pte::pfn(old), addr >> 12);
                    if (VcpuMask* m = table_masks_[slot.table].load(std::memory_order_acquire)) targets.merge(*m);
                    pages.push_back(addr);
                });
            }
            cursor = next;
            while (t < tables.size() && cursor >= std::min(r.end, tables[t].second + kTableSpan)) ++t;
            if (pages.empty()) continue;
            total += pages.size();
            c.zaps += pages.size();
            ++c.batches;
            c.max_batch = std::max<std::uint64_t>(c.max_batch, pages.size());
            if (shootdown_ && !targets.empty()) {
                ++c.shootdowns;
                c.shootdown_targets += targets.count();
                shootdown_->shootdown(targets, pages);
            }
        }
    }
    return total;
}

std::size_t ShadowMmu::zap_guest_range(std::uint64_t start, std::uint64_t end) {
    const GuestRange r{start, end};
    std::lock_guard zaps(zap_mutex_);
    return zap_ranges(std::span(&r, 1), zap_slot());
}

std::size_t ShadowMmu::zap_frame(Pfn pfn) {
    std::vector<GuestRange> ranges;
    for (std::uint64_t gfn : rmap_.list(pfn)) ranges.push_back({gfn << 12, (gfn << 12) + kPage});
    std::lock_guard zaps(zap_mutex_);
    return zap_ranges(ranges, zap_slot());
}

std::vector<GuestRange> ShadowMmu::guest_ranges(HostRange range) const {
    ReaderSlotLock::SharedGuard lock(slots_lock_, slots_lock_.shared_slot());
    return memslots_.host_to_guest(range.start, range.end);
}

StartResult ShadowMmu::invalidate_range_start(HostRange range, InvalidateEvent, bool blockable) {
    std::unique_lock zaps(zap_mutex_, std::defer_lock);
    if (blockable)
        zaps.lock();
    else if (!zaps.try_lock())
        return StartResult::TryAgain;
    const std::vector<GuestRange> ranges = guest_ranges(range);
    begin_invalidation(ranges);
    zap_ranges(ranges, zap_slot());
    return StartResult::Ok;
}

// Caller holds zap_mutex_, so starts do not race each other; an end may
// run concurrently, which at worst leaves the hull larger than needed.
// The hull is written before the count goes up, and faults read it under
// the policy lock that the zap of their entry also takes, so a fault that
// could install an entry this invalidation zaps sees the widened hull.
void ShadowMmu::begin_invalidation(std::span<const GuestRange> ranges) {
    std::uint64_t lo = ~0ull, hi = 0;
    for (const GuestRange& r : ranges) {
        lo = std::min(lo, r.start);
        hi = std::max(hi, r.end);
    }
    if (invalidate_in_progress_.load(std::memory_order_seq_cst) == 0) {
        invalidate_lo_.store(lo, std::memory_order_seq_cst);
        invalidate_hi_.store(hi, std::memory_order_seq_cst);
    } else {
        invalidate_lo_.store(std::min(lo, invalidate_lo_.load()), std::memory_order_seq_cst);
        invalidate_hi_.store(std::max(hi, invalidate_hi_.load()), std::memory_order_seq_cst);
    }
    invalidate_in_progress_.fetch_add(1, std::memory_order_seq_cst);
}

bool ShadowMmu::invalidation_covers(std::uint64_t ga) const {
    return invalidate_in_progress_.load(std::memory_order_seq_cst) != 0 &&
           invalidate_lo_.load(std::memory_order_seq_cst) <= ga && ga < invalidate_hi_.load(std::memory_order_seq_cst);
}

void ShadowMmu::invalidate_range_end(HostRange, InvalidateEvent) {
    invalidate_seq_.fetch_add(1);
    invalidate_in_progress_.fetch_sub(1);
}

void ShadowMmu::invalidate_page(std::uint64_t host_address, InvalidateEvent event) {
    const HostRange page{host_address & ~(kPage - 1), (host_address & ~(kPage - 1)) + kPage};
    invalidate_range_start(page, event, true);
    invalidate_range_end(page, event);
}

bool ShadowMmu::clear_young(HostRange range) {
    const std::vector<GuestRange> ranges = guest_ranges(range);
    bool young = false;
    for (const auto& r : ranges)
        table_.for_each_leaf(r.start, r.end, 0, [&](std::uint64_t, const auto& slot) {
            auto e = at(slot.entry);
            std::uint64_t old = e.load(std::memory_order_acquire);
            while (Pte::present(old) && Pte::accessed(old)) {
                if (e.compare_exchange_weak(old, Pte::with_accessed(old, false), std::memory_order_acq_rel)) {
                    young = true;
                    break;
                }
            }
        });
    return young;
}

bool ShadowMmu::test_young(HostRange range) {
    const std::vector<GuestRange> ranges = guest_ranges(range);
    bool young = false;
    for (const auto& r : ranges)
        table_.for_each_leaf(r.start, r.end, 0, [&](std::uint64_t, const auto& slot) {
            if (Pte::accessed(at(slot.entry).load(std::memory_order_acquire))) young = true;
        });
    return young;
}

void ShadowMmu::release() {
    subscribed_ = false;
    const GuestRange everything{0, MemslotTable::kAddressLimit};
    std::lock_guard zaps(zap_mutex_);
    zap_ranges(std::span(&everything, 1), zap_slot());
}

std::vector<std::string> ShadowMmu::audit() {
    std::vector<std::string> problems;
    // Copy the memslots and drop their lock before asking the host: the host
    // calls into us (invalidate_page) holding its own locks, and we never
    // take a host lock while holding one of ours except on the fault path.
    MemslotTable slots_copy;
    {
        ReaderSlotLock::SharedGuard slots(slots_lock_, slots_lock_.shared_slot());
        slots_copy = memslots_;
    }
    std::size_t present = 0;
    table_.for_each_leaf(0, MemslotTable::kAddressLimit, 0, [&](std::uint64_t ga, const auto& slot) {
        const std::uint64_t e = at(slot.entry).load(std::memory_order_acquire);
        ++present;
        const auto ha = slots_copy.guest_to_host(ga);
        if (!ha) {
            problems.push_back("entry for " + hex(ga) + " lies outside every memslot");
            return;
        }
        const auto host = host_.lookup(*ha);
        if (!host)
            problems.push_back("entry for " + hex(ga) + " maps frame " + hex(Pte::pfn(e)) + " but host page " +
                               hex(*ha) + " is not present");
        else if (host->pfn != Pte::pfn(e))
            problems.push_back("entry for " + hex(ga) + " maps frame " + hex(Pte::pfn(e)) + ", the host maps " +
                               hex(host->pfn));
        else if (Pte::writable(e) && !host->writable)
            problems.push_back("entry for " + hex(ga) + " is writable, the host page is read-only");
        const auto links = rmap_.list(Pte::pfn(e));
        if (std::find(links.begin(), links.end(), ga >> 12) == links.end())
            problems.push_back("entry for " + hex(ga) + " has no rmap link from frame " + hex(Pte::pfn(e)));
    });
    if (rmap_.links() != present)
        problems.push_back("rmap holds " + std::to_string(rmap_.links()) + " links for " + std::to_string(present) +
                           " present entries");
    return problems;
}

ShadowCounters ShadowMmu::counters() const {
    ShadowCounters sum = fault_counters();
    sum += counters_[config_.vcpus].c;
    return sum;
}

ShadowCounters ShadowMmu::fault_counters() const {
    ShadowCounters sum;
    for (std::uint32_t i = 0; i < config_.vcpus; ++i) sum += counters_[i].c;
    return sum;
}

} // namespace hv::mmu
