#include "mmu/base/frame_space.hpp"

#include "mmu/base/units.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <sys/mman.h>

namespace hv::mmu {
namespace {

Pfn chunks_of(Pfn frames) { return (frames + kFrameChunk - 1) / kFrameChunk; }

// The frame count of memory handed to a FrameSpace; throws
// std::invalid_argument unless it is non-empty, 4 KiB aligned, whole frames,
// and first_allocatable < end_allocatable <= that count.
Pfn checked_frames(std::span<std::uint8_t> memory, Pfn first_allocatable, Pfn end_allocatable) {
    const auto address = reinterpret_cast<std::uintptr_t>(memory.data());
    if (memory.empty()) throw std::invalid_argument("FrameSpace: expected non-empty memory, found 0 bytes");
    if (address % kPage)
        throw std::invalid_argument("FrameSpace: memory must be 4 KiB aligned, found address " + hex(address));
    if (memory.size() % kPage)
        throw std::invalid_argument("FrameSpace: memory must be a whole number of 4 KiB frames, found " +
                                    hex(memory.size()) + " bytes");
    const Pfn frames = memory.size() / kPage;
    if (first_allocatable >= end_allocatable || end_allocatable > frames)
        throw std::invalid_argument("FrameSpace: expected first_allocatable < end_allocatable <= " + hex(frames) +
                                    " (the frame count), found [" + hex(first_allocatable) + ", " +
                                    hex(end_allocatable) + ")");
    return frames;
}

} // namespace

FrameSpace::FrameSpace(std::size_t frames)
    : caches_(std::make_unique<std::atomic<CpuCache*>[]>(kFrameCpus)) {
    if (frames == 0) throw std::runtime_error("FrameSpace: expected at least one frame, found 0");
    if (frames > std::numeric_limits<std::size_t>::max() / kPage)
        throw std::runtime_error("FrameSpace: " + std::to_string(frames) + " frames overflow the address space");
    const std::size_t size = frames * kPage;
    // MAP_NORESERVE: a large frame space costs nothing until frames are touched.
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        throw std::runtime_error("FrameSpace: cannot map " + std::to_string(frames) + " frames (" +
                                 std::to_string(size) + " bytes): " + std::strerror(errno));
    try {
        state_.emplace(frames);
        chunk_owner_.emplace(chunks_of(frames));
    } catch (...) {
        ::munmap(p, size); // no destructor runs for a constructor that throws
        throw;
    }
    base_ = static_cast<std::uint8_t*>(p);
    frames_ = frames;
    first_ = 0;
    end_ = frames;
    owned_ = true;
    next_fresh_ = first_;
}

FrameSpace::FrameSpace(std::span<std::uint8_t> memory, Pfn first_allocatable, Pfn end_allocatable)
    : caches_(std::make_unique<std::atomic<CpuCache*>[]>(kFrameCpus)) {
    const Pfn frames = checked_frames(memory, first_allocatable, end_allocatable);
    state_.emplace(frames);
    chunk_owner_.emplace(chunks_of(frames));
    base_ = memory.data();
    frames_ = frames;
    first_ = first_allocatable;
    end_ = end_allocatable;
    owned_ = false;
    next_fresh_ = first_;
}

FrameSpace::FrameSpace(Mirror mirror, Pfn first_allocatable, Pfn end_allocatable)
    : FrameSpace(static_cast<std::size_t>(checked_frames(mirror.memory, first_allocatable, end_allocatable))) {
    mirror_ = mirror.memory.data();
    first_ = first_allocatable;
    end_ = end_allocatable;
    next_fresh_ = first_;
}

FrameSpace::~FrameSpace() {
    for (std::uint32_t c = 0; c < kFrameCpus; ++c) delete caches_[c].load(std::memory_order_relaxed);
    if (owned_) ::munmap(base_, frames_ * kPage);
}

void FrameSpace::took(std::uint64_t n) {
    taken_ += n;
    if (taken_ > counters_.high_water) counters_.high_water = taken_;
}

bool FrameSpace::take_from_pool(Pfn& entry) {
    if (!free_stack_.empty()) {
        entry = free_stack_.back() | kZeroBit;
        free_stack_.pop_back();
        return true;
    }
    if (next_fresh_ < end_) {
        // Our own anonymous mapping is zero until written; someone else's
        // memory (guest RAM) may hold anything.
        entry = next_fresh_++ | (owned_ ? 0 : kZeroBit);
        return true;
    }
    return false;
}

bool FrameSpace::steal_one(Pfn& entry) {
    for (std::uint32_t v = 0; v < kFrameCpus; ++v) {
        CpuCache* c = caches_[v].load(std::memory_order_acquire);
        if (!c) continue;
        std::lock_guard guard(c->lock);
        if (c->count == 0) continue;
        entry = c->frames[--c->count];
        (*chunk_owner_)[(entry & ~kZeroBit) / kFrameChunk].store(0, std::memory_order_relaxed);
        return true;
    }
    return false;
}

bool FrameSpace::steal(CpuCache& into, std::uint32_t thief) {
    for (std::uint32_t v = 0; v < kFrameCpus; ++v) {
        if (v == thief) continue;
        CpuCache* c = caches_[v].load(std::memory_order_acquire);
        if (!c) continue;
        std::lock_guard guard(c->lock);
        if (c->count == 0) continue;
        // Half (at least one): the victim keeps some for itself.
        for (std::uint32_t n = (c->count + 1) / 2; n > 0; --n) {
            const Pfn e = c->frames[--c->count];
            (*chunk_owner_)[(e & ~kZeroBit) / kFrameChunk].store(0, std::memory_order_relaxed);
            into.frames[into.count++] = e;
        }
        return true;
    }
    return false;
}

// Caller holds mutex_ and c.lock; c is empty.
void FrameSpace::refill(CpuCache& c, std::uint32_t cpu) {
    // A whole aligned chunk of fresh frames. Fresh frames below the next
    // chunk boundary (left by shared-pool allocations) go to the free stack
    // first, so that every chunk a CPU receives is a whole aligned one.
    if (next_fresh_ % kFrameChunk != 0) {
        const Pfn aligned = (next_fresh_ / kFrameChunk + 1) * kFrameChunk;
        if (aligned + kFrameChunk <= end_) {
            free_stack_.reserve(free_stack_.size() + (aligned - next_fresh_));
            for (Pfn p = aligned; p-- > next_fresh_;) free_stack_.push_back(p);
            next_fresh_ = aligned;
        }
    }
    if (next_fresh_ % kFrameChunk == 0 && next_fresh_ + kFrameChunk <= end_) {
        for (Pfn i = kFrameChunk; i-- > 0;) c.frames[c.count++] = (next_fresh_ + i) | (owned_ ? 0 : kZeroBit);
        const auto owner = static_cast<std::uint16_t>(cpu + 1);
        (*chunk_owner_)[next_fresh_ / kFrameChunk].store(owner, std::memory_order_relaxed);
        next_fresh_ += kFrameChunk;
        took(kFrameChunk);
        ++counters_.refills;
        return;
    }
    // No whole chunk left: up to half a chunk from the pool, else from
    // another CPU's cache.
    std::uint64_t n = 0;
    for (Pfn e; n < kFrameChunk / 2 && take_from_pool(e); ++n) c.frames[c.count++] = e;
    if (n) {
        took(n);
        ++counters_.refills;
        return;
    }
    if (steal(c, cpu)) ++counters_.refills;
}

Pfn FrameSpace::hand_out(Pfn entry) {
    const Pfn pfn = entry & ~kZeroBit;
    (*state_)[pfn].store(1, std::memory_order_relaxed);
    // Outside the locks: the frame is ours alone now, and 4 KiB of stores
    // should not extend every other thread's wait.
    if (entry & kZeroBit) std::memset(base_ + pfn * kPage, 0, kPage);
    if (mirror_) std::memset(mirror_ + pfn * kPage, 0, kPage); // whatever the guest left there
    return pfn;
}

std::optional<Pfn> FrameSpace::allocate() {
    Pfn entry;
    {
        std::lock_guard lock(mutex_);
        if (take_from_pool(entry)) {
            took(1);
        } else if (!steal_one(entry)) {
            ++counters_.failed;
            return std::nullopt;
        }
        ++counters_.allocated;
    }
    return hand_out(entry);
}

std::optional<Pfn> FrameSpace::allocate(std::uint32_t cpu) {
    Cost ignored;
    return allocate(cpu, ignored);
}

std::optional<Pfn> FrameSpace::allocate(std::uint32_t cpu, Cost& cost) {
    if (cpu >= kFrameCpus) {
        cost.locks += 1;
        cost.shared_atomics += 2;
        return allocate();
    }
    CpuCache* c = caches_[cpu].load(std::memory_order_acquire);
    Pfn entry = 0;
    bool got = false;
    if (c) {
        cost.locks += 1;
        std::lock_guard guard(c->lock);
        if (c->count != 0) {
            entry = c->frames[--c->count];
            ++c->allocated;
            got = true;
        }
    }
    if (!got) {
        // Refill under the allocator lock (lock order: mutex_, then a cache).
        cost.locks += 2;
        cost.shared_atomics += 2;
        std::lock_guard lock(mutex_);
        if (!c) {
            c = new CpuCache;
            caches_[cpu].store(c, std::memory_order_release);
        }
        std::lock_guard guard(c->lock);
        if (c->count == 0) refill(*c, cpu);
        if (c->count == 0) {
            ++counters_.failed;
            return std::nullopt;
        }
        entry = c->frames[--c->count];
        ++c->allocated;
    }
    return hand_out(entry);
}

void FrameSpace::free(Pfn pfn) {
    if (pfn < first_ || pfn >= end_)
        throw std::logic_error("FrameSpace::free: expected a pfn in the allocatable range [" + hex(first_) + ", " +
                               hex(end_) + "), found " + hex(pfn));
    std::lock_guard lock(mutex_);
    if ((*state_)[pfn].load(std::memory_order_relaxed) != 1)
        throw std::logic_error("FrameSpace::free: expected an allocated frame, found pfn " + hex(pfn) +
                               " free already (double free, or never allocated)");
    // Grow the stack before changing any state, so a failed allocation
    // leaves the frame allocated rather than lost.
    free_stack_.push_back(pfn);
    (*state_)[pfn].store(0, std::memory_order_relaxed);
    // The chunk's lines are no longer one CPU's: the frame goes to whoever
    // allocates next.
    (*chunk_owner_)[pfn / kFrameChunk].store(0, std::memory_order_relaxed);
    ++counters_.freed;
    --taken_;
}

void FrameSpace::give_back(Pfn pfn, std::uint32_t cpu) {
    CpuCache* c = cpu < kFrameCpus ? caches_[cpu].load(std::memory_order_acquire) : nullptr;
    if (pfn < first_ || pfn >= end_ || !c) return free(pfn);
    {
        std::lock_guard guard(c->lock);
        if (c->count < kFrameChunk) {
            if ((*state_)[pfn].load(std::memory_order_relaxed) != 1)
                throw std::logic_error("FrameSpace::give_back: expected an allocated frame, found pfn " + hex(pfn) +
                                       " free already (double free, or never allocated)");
            (*state_)[pfn].store(0, std::memory_order_relaxed);
            c->frames[c->count++] = pfn | kZeroBit; // zeroed again when handed out: cheap insurance
            ++c->given_back;
            return;
        }
    }
    free(pfn);
}

bool FrameSpace::is_allocated(Pfn pfn) const {
    if (pfn < first_ || pfn >= end_) return false;
    return (*state_)[pfn].load(std::memory_order_relaxed) == 1;
}

void FrameSpace::bad_pfn(const char* op, const char* what, Pfn pfn) const {
    throw std::out_of_range(std::string("FrameSpace::") + op + ": expected " + what + " below " + hex(frames_) +
                            " (the frame count), found " + hex(pfn));
}

FrameCounters FrameSpace::counters() const {
    std::lock_guard lock(mutex_);
    FrameCounters c = counters_;
    for (std::uint32_t v = 0; v < kFrameCpus; ++v) {
        CpuCache* cache = caches_[v].load(std::memory_order_acquire);
        if (!cache) continue;
        std::lock_guard guard(cache->lock);
        c.allocated += cache->allocated;
        c.freed += cache->given_back;
        c.cached += cache->count;
    }
    c.in_use = c.allocated - c.freed;
    return c;
}

} // namespace hv::mmu
