#include "frame_space.hpp"

#include "hex.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <sys/mman.h>

namespace hv::mmu {
namespace {


std::size_t bitmap_words(Pfn frames) { return static_cast<std::size_t>((frames + 63) / 64); }

} // namespace

FrameSpace::FrameSpace(std::size_t frames) {
    if (frames == 0) throw std::runtime_error("FrameSpace: expected at least one frame, found 0");
    if (frames > std::numeric_limits<std::size_t>::max() / kFrameSize)
        throw std::runtime_error("FrameSpace: " + std::to_string(frames) + " frames overflow the address space");
    const std::size_t size = frames * kFrameSize;
    // MAP_NORESERVE: a large frame space costs nothing until frames are touched.
    void* p = ::mmap(nullptr, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (p == MAP_FAILED)
        throw std::runtime_error("FrameSpace: cannot map " + std::to_string(frames) + " frames (" +
                                 std::to_string(size) + " bytes): " + std::strerror(errno));
    try {
        bitmap_.assign(bitmap_words(frames), 0);
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

FrameSpace::FrameSpace(std::span<std::uint8_t> memory, Pfn first_allocatable, Pfn end_allocatable) {
    const auto address = reinterpret_cast<std::uintptr_t>(memory.data());
    if (memory.empty()) throw std::invalid_argument("FrameSpace: expected non-empty memory, found 0 bytes");
    if (address % kFrameSize)
        throw std::invalid_argument("FrameSpace: memory must be 4 KiB aligned, found address " + hex(address));
    if (memory.size() % kFrameSize)
        throw std::invalid_argument("FrameSpace: memory must be a whole number of 4 KiB frames, found " +
                                    hex(memory.size()) + " bytes");
    const Pfn frames = memory.size() / kFrameSize;
    if (first_allocatable >= end_allocatable || end_allocatable > frames)
        throw std::invalid_argument("FrameSpace: expected first_allocatable < end_allocatable <= " + hex(frames) +
                                    " (the frame count), found [" + hex(first_allocatable) + ", " +
                                    hex(end_allocatable) + ")");
    base_ = memory.data();
    frames_ = frames;
    first_ = first_allocatable;
    end_ = end_allocatable;
    owned_ = false;
    next_fresh_ = first_;
    bitmap_.assign(bitmap_words(end_ - first_), 0);
}

FrameSpace::~FrameSpace() {
    if (owned_) ::munmap(base_, frames_ * kFrameSize);
}

bool FrameSpace::bit(Pfn pfn) const {
    const Pfn i = pfn - first_;
    return (bitmap_[i / 64] >> (i % 64)) & 1;
}

void FrameSpace::set_bit(Pfn pfn, bool value) {
    const Pfn i = pfn - first_;
    const std::uint64_t mask = std::uint64_t{1} << (i % 64);
    if (value)
        bitmap_[i / 64] |= mask;
    else
        bitmap_[i / 64] &= ~mask;
}

std::optional<Pfn> FrameSpace::allocate() {
    Pfn pfn;
    bool needs_zeroing;
    {
        std::lock_guard lock(mutex_);
        if (!free_stack_.empty()) {
            pfn = free_stack_.back();
            free_stack_.pop_back();
            needs_zeroing = true;
        } else if (next_fresh_ < end_) {
            pfn = next_fresh_++;
            // Our own anonymous mapping is zero until written; someone
            // else's memory (guest RAM) may hold anything.
            needs_zeroing = !owned_;
        } else {
            ++counters_.failed;
            return std::nullopt;
        }
        set_bit(pfn, true);
        ++counters_.allocated;
        ++counters_.in_use;
        if (counters_.in_use > counters_.high_water) counters_.high_water = counters_.in_use;
    }
    // Outside the lock: the frame is ours alone now, and 4 KiB of stores
    // should not extend every other thread's wait.
    if (needs_zeroing) std::memset(base_ + pfn * kFrameSize, 0, kFrameSize);
    return pfn;
}

void FrameSpace::free(Pfn pfn) {
    if (pfn < first_ || pfn >= end_)
        throw std::logic_error("FrameSpace::free: expected a pfn in the allocatable range [" + hex(first_) + ", " +
                               hex(end_) + "), found " + hex(pfn));
    std::lock_guard lock(mutex_);
    if (!bit(pfn))
        throw std::logic_error("FrameSpace::free: expected an allocated frame, found pfn " + hex(pfn) +
                               " free already (double free, or never allocated)");
    // Grow the stack before changing any state, so a failed allocation
    // leaves the frame allocated rather than lost.
    free_stack_.push_back(pfn);
    set_bit(pfn, false);
    ++counters_.freed;
    --counters_.in_use;
}

bool FrameSpace::is_allocated(Pfn pfn) const {
    if (pfn < first_ || pfn >= end_) return false;
    std::lock_guard lock(mutex_);
    return bit(pfn);
}

std::span<std::uint8_t, kFrameSize> FrameSpace::bytes(Pfn pfn) const {
    if (!contains(pfn))
        throw std::out_of_range("FrameSpace::bytes: expected a pfn below " + hex(frames_) +
                                " (the frame count), found " + hex(pfn));
    return std::span<std::uint8_t, kFrameSize>(base_ + pfn * kFrameSize, kFrameSize);
}

std::uint64_t* FrameSpace::entries(Pfn pfn) const {
    if (!contains(pfn))
        throw std::out_of_range("FrameSpace::entries: expected a table pfn below " + hex(frames_) +
                                " (the frame count), found " + hex(pfn));
    return reinterpret_cast<std::uint64_t*>(base_ + pfn * kFrameSize);
}

FrameCounters FrameSpace::counters() const {
    std::lock_guard lock(mutex_);
    return counters_;
}

} // namespace hv::mmu
