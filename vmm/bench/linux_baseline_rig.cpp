#include "vmm/bench/linux_baseline_rig.hpp"

#include "vmm/kvm/text_format.hpp"

#include <algorithm>
#include <cerrno>
#include <stdexcept>

#include <sys/mman.h>

namespace hv::bench::linux_rig {

void check_pages(const char* fn, std::uint64_t pages) {
    if (pages == 0 || pages > kMaxBytes / kPageBytes)
        throw std::invalid_argument(std::string(fn) + ": expected 1.." + std::to_string(kMaxBytes / kPageBytes) +
                                    " pages, got " + std::to_string(pages));
}

void check_threads(const char* fn, std::uint32_t threads) {
    if (threads == 0 || threads > kMaxThreads)
        throw std::invalid_argument(std::string(fn) + ": expected 1.." + std::to_string(kMaxThreads) +
                                    " threads, got " + std::to_string(threads));
}

void check_range(const char* fn, std::uint64_t bytes, std::uint64_t chunk_bytes) {
    if (bytes == 0 || bytes % kPageBytes != 0 || bytes > kMaxBytes)
        throw std::invalid_argument(std::string(fn) + ": expected bytes a non-zero multiple of 4096 up to " +
                                    format_size(kMaxBytes) + ", got " + std::to_string(bytes));
    if (chunk_bytes == 0 || chunk_bytes % kPageBytes != 0 || bytes % chunk_bytes != 0)
        throw std::invalid_argument(std::string(fn) + ": expected chunk_bytes a non-zero multiple of 4096 dividing " +
                                    std::to_string(bytes) + ", got " + std::to_string(chunk_bytes));
}

Region::Region(std::uint64_t bytes, const char* what) : bytes_(bytes) {
    const std::uint64_t slack = kHugeBytes - kPageBytes;
    void* raw = ::mmap(nullptr, bytes + slack, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                       -1, 0);
    if (raw == MAP_FAILED) {
        const int err = errno;
        throw_errno(err, "mmap of " + format_size(bytes) + " for " + what);
    }
    const auto start = reinterpret_cast<std::uintptr_t>(raw);
    const auto aligned = (start + kHugeBytes - 1) & ~(kHugeBytes - 1);
    if (aligned != start) ::munmap(raw, aligned - start);
    if (const auto tail = start + bytes + slack - (aligned + bytes); tail != 0)
        ::munmap(reinterpret_cast<void*>(aligned + bytes), tail);
    base_ = reinterpret_cast<std::uint8_t*>(aligned);
    // EINVAL: a kernel without transparent huge pages, so nothing to turn off.
    if (::madvise(base_, bytes_, MADV_NOHUGEPAGE) != 0 && errno != EINVAL) {
        const int err = errno;
        ::munmap(base_, bytes_); // a throwing constructor runs no destructor
        throw_errno(err, "madvise(MADV_NOHUGEPAGE) of " + format_size(bytes) + " for " + what);
    }
}

Region::~Region() {
    if (base_) ::munmap(base_, bytes_);
}

void populate(std::span<std::uint8_t> region) {
    for (std::uint64_t off = 0; off < region.size(); off += kPageBytes)
        *static_cast<volatile std::uint8_t*>(&region[off]) = 1;
}

Team::Team(std::uint32_t threads, std::function<void(std::uint32_t)> body)
    : body_(std::move(body)), parked_(threads), finished_(threads) {
    threads_.reserve(threads);
    try {
        for (std::uint32_t t = 0; t < threads; ++t)
            threads_.emplace_back([this, t] {
                parked_.count_down();
                gate_.wait(kParked, std::memory_order_acquire);
                if (gate_.load(std::memory_order_acquire) == kAbort) return;
                body_(t);
                finished_[t] = Clock::now();
            });
    } catch (const std::system_error& e) {
        const auto started = threads_.size();
        stop();
        throw std::system_error(e.code(), "cannot start thread " + std::to_string(started + 1) + " of " +
                                              std::to_string(threads));
    }
}

void Team::stop() {
    if (gate_.load() == kParked) {
        gate_.store(kAbort, std::memory_order_release);
        gate_.notify_all();
    }
    for (auto& thread : threads_)
        if (thread.joinable()) thread.join();
}

std::uint64_t Team::run() {
    parked_.wait();
    const auto released = Clock::now();
    gate_.store(kGo, std::memory_order_release);
    gate_.notify_all();
    for (auto& thread : threads_) thread.join();
    return ns_between(released, *std::max_element(finished_.begin(), finished_.end()));
}

} // namespace hv::bench::linux_rig
