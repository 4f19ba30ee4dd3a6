// The shadow MMU's set-up: the policies' names, the counters,
// construction and destruction, memslots and static ranges.
#include "mmu/secondary/shadow_mmu.hpp"

#include "mmu/base/units.hpp"
#include "mmu/sync/sched_point.hpp"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

namespace hv::mmu {

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
std::optional<LockPolicy> lock_policy_named(std::string_view name) {
    for (const LockPolicy p : {LockPolicy::Global, LockPolicy::Rw, LockPolicy::Split})
        if (name == to_string(p)) return p;
    return std::nullopt;
}
std::optional<CoherencePolicy> coherence_policy_named(std::string_view name) {
    for (const CoherencePolicy p : {CoherencePolicy::Seq, CoherencePolicy::PtLock, CoherencePolicy::RangeActive})
        if (name == to_string(p)) return p;
    return std::nullopt;
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
    shootdown_targets += o.shootdown_targets; walk_registrations += o.walk_registrations;
    resumed_batches += o.resumed_batches;
    mask_departures += o.mask_departures; max_batch = std::max(max_batch, o.max_batch);
    return *this;
}

ShadowCounters ShadowCounters::since(const ShadowCounters& b) const {
    ShadowCounters d = *this;
    d.faults -= b.faults; d.installs -= b.installs; d.retries -= b.retries; d.no_memslot -= b.no_memslot;
    d.refused -= b.refused; d.out_of_frames -= b.out_of_frames; d.lock_acquisitions -= b.lock_acquisitions;
    d.shared_atomics -= b.shared_atomics; d.host_lock_acquisitions -= b.host_lock_acquisitions;
    d.host_shared_atomics -= b.host_shared_atomics; d.zaps -= b.zaps; d.batches -= b.batches;
    d.shootdowns -= b.shootdowns; d.shootdown_targets -= b.shootdown_targets; d.resumed_batches -= b.resumed_batches;
    d.walk_registrations -= b.walk_registrations; d.mask_departures -= b.mask_departures;
    return d;
}

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
      rmap_(host.frames().frame_count()), slots_lock_(config_.vcpus, ReaderSlotLock::Mode::RareWriters),
      rw_lock_(config_.vcpus),
      table_locks_(host.frames().frame_count()), table_masks_(host.frames().frame_count()),
      coherence_(host, config_.batch),
      counters_(std::make_unique<PaddedCounters[]>(config_.vcpus + 1)) {
    host_.notifiers().subscribe(*this);
    subscribed_ = true;
}

ShadowMmu::~ShadowMmu() {
    if (subscribed_ && !host_.notifiers().released()) host_.notifiers().unsubscribe(*this);
    shootdown_ = nullptr; // its owner may be gone; nobody can use our entries any more
    const GuestRange everything{0, MemslotTable::kAddressLimit};
    zap_ranges(std::span(&everything, 1), zap_slot());
    // The masks go with the slabs in counters_.
}

void ShadowMmu::refuse_static_overlap(std::uint64_t start, std::uint64_t end, const char* what) const {
    for (const StaticRange& r : statics_)
        if (start < r.end && r.start < end)
            throw MemslotError(std::string(what) + ": guest range [" + hex(start) + ", " + hex(end) +
                               ") overlaps the static range [" + hex(r.start) + ", " + hex(r.end) + ")");
}

void ShadowMmu::add_memslot(const Memslot& slot) {
    // Like KVM, a new slot waits until no invalidation is active (holding
    // zap_mutex_, so none starts meanwhile).
    std::lock_guard zaps(zap_mutex_);
    coherence_.wait_idle();
    std::unique_lock lock(slots_lock_);
    if (slot.size != 0 && slot.guest_start + slot.size > slot.guest_start)
        refuse_static_overlap(slot.guest_start, slot.guest_end(), "memslot");
    memslots_.add(slot);
}

void ShadowMmu::alias_memslot(std::uint32_t existing, std::uint32_t id, std::uint64_t guest_start) {
    // Like KVM, a new slot waits until no invalidation is active (holding
    // zap_mutex_, so none starts meanwhile).
    std::lock_guard zaps(zap_mutex_);
    coherence_.wait_idle();
    std::unique_lock lock(slots_lock_);
    for (const Memslot& s : memslots_.slots())
        if (s.id == existing && guest_start + s.size > guest_start)
            refuse_static_overlap(guest_start, guest_start + s.size, "memslot alias");
    memslots_.alias(existing, id, guest_start);
}

std::uint64_t ShadowMmu::static_entry(Pfn frame, bool writable) {
    Perms perms{};
    perms.read = true;
    perms.write = writable;
    perms.exec = true;
    perms.user = true;
    // Accessed, and dirty when writable: the CPU never writes these entries.
    return Pte::with_dirty(Pte::with_accessed(Pte::make_leaf(frame, perms), true), writable) | kStaticBit;
}

void ShadowMmu::map_static(std::uint64_t guest_start, std::uint64_t size, Pfn first_frame, bool writable) {
    if (size == 0 || (guest_start | size) % kPage || guest_start + size < guest_start ||
        guest_start + size > MemslotTable::kAddressLimit)
        throw MemslotError("static range: expected a non-empty 4 KiB-aligned range below 2^47, got [" +
                           hex(guest_start) + ", +" + hex(size) + ")");
    const std::uint64_t pages = size / kPage;
    const FrameSpace& fs = host_.frames();
    if (first_frame + pages < first_frame || first_frame + pages > fs.frame_count())
        throw MemslotError("static range: frames [" + hex(first_frame) + ", +" + hex(pages) +
                           ") lie outside the frame space of " + hex(fs.frame_count()) + " frames");
    // The allocators must never hand a static frame out as a table or a page.
    for (const FrameSpace* pool : {&fs, &std::as_const(host_).data_frames()})
        if (first_frame < pool->end_allocatable() && pool->first_allocatable() < first_frame + pages)
            throw MemslotError("static range: frames [" + hex(first_frame) + ", +" + hex(pages) +
                               ") overlap the allocatable frames [" + hex(pool->first_allocatable()) + ", " +
                               hex(pool->end_allocatable()) + ")");
    std::lock_guard zaps(zap_mutex_);
    std::unique_lock lock(slots_lock_);
    refuse_static_overlap(guest_start, guest_start + size, "static range");
    for (const Memslot& s : memslots_.slots())
        if (guest_start < s.guest_end() && s.guest_start < guest_start + size)
            throw MemslotError("static range [" + hex(guest_start) + ", " + hex(guest_start + size) +
                               ") overlaps memslot " + std::to_string(s.id));
    for (std::uint64_t i = 0; i < pages; ++i) {
        auto leaf = table_.ensure_leaf(guest_start + i * kPage);
        if (!leaf) {
            // Undo the part already mapped: the tables stay (they belong to
            // the table and are freed with it), the entries go.
            for (std::uint64_t j = 0; j < i; ++j)
                if (auto l = table_.find_leaf(guest_start + j * kPage)) {
                    at(l->entry).store(0, std::memory_order_release);
                    frames().mirror(l->entry);
                }
            throw MemslotError("static range: no frame left for a shadow table after " + std::to_string(i) +
                               " of " + std::to_string(pages) + " pages");
        }
        at(leaf->entry).store(static_entry(first_frame + i, writable), std::memory_order_release);
        frames().mirror(leaf->entry);
    }
    statics_.push_back({guest_start, guest_start + size, first_frame, writable});
}

void ShadowMmu::remove_memslot(std::uint32_t id) {
    // Like an invalidation: faults that looked the slot up before must retry.
    // Lock order everywhere: zap_mutex_, then slots_lock_, then the zap locks.
    std::lock_guard zaps(zap_mutex_);
    std::unique_lock lock(slots_lock_);
    const Memslot s = memslots_.remove(id); // throws for an unknown id, before anything changed
    coherence_.retire_memslot(); // before the zap: see fault()
    sched::point(sched::Point::MemslotRetired);
    const GuestRange r{s.guest_start, s.guest_end()};
    invalidate_guest(std::span(&r, 1));
    coherence_.end();
}

std::vector<Memslot> ShadowMmu::memslots() const {
    ReaderSlotLock::SharedGuard lock(slots_lock_, slots_lock_.shared_slot());
    return memslots_.slots();
}

std::optional<std::uint64_t> ShadowMmu::guest_to_host(std::uint64_t guest_address) const {
    ReaderSlotLock::SharedGuard lock(slots_lock_, slots_lock_.shared_slot());
    return memslots_.guest_to_host(guest_address);
}

std::uint64_t ShadowMmu::entry(std::uint64_t ga) const {
    auto slot = table_.find_leaf(ga);
    if (!slot) return 0;
    const std::uint64_t e = at(slot->entry).load(std::memory_order_acquire);
    return Pte::present(e) ? e : 0;
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
