// The Linux baselines timed on plain anonymous memory: first-touch faults,
// zaps and mprotect (userfaultfd demand paging is in linux_uffd.cpp).
#include "vmm/bench/linux_baseline.hpp"
#include "vmm/bench/linux_baseline_rig.hpp"

#include "vmm/kvm/text_format.hpp"

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <string>
#include <vector>

#include <sys/mman.h>

namespace hv::bench {

using namespace linux_rig;

double LinuxResult::ns_per_page() const { return pages ? static_cast<double>(total_ns) / static_cast<double>(pages) : 0; }

double LinuxResult::ns_per_call() const { return calls ? static_cast<double>(total_ns) / static_cast<double>(calls) : 0; }

double LinuxResult::pages_per_second() const {
    return total_ns ? static_cast<double>(pages) * 1e9 / static_cast<double>(total_ns) : 0;
}

std::uint64_t resident_pages(std::span<const std::uint8_t> range) {
    if (range.empty()) return 0;
    std::vector<unsigned char> vec((range.size() + kPageBytes - 1) / kPageBytes);
    if (::mincore(const_cast<std::uint8_t*>(range.data()), range.size(), vec.data()) != 0) {
        const int err = errno;
        throw_errno(err, "mincore of " + format_size(range.size()) + " at " +
                             hex(reinterpret_cast<std::uint64_t>(range.data())));
    }
    return static_cast<std::uint64_t>(std::count_if(vec.begin(), vec.end(), [](unsigned char c) { return c & 1; }));
}

LinuxResult linux_first_touch(std::uint64_t pages, std::uint32_t threads, Sharing sharing, const Inspect& inspect) {
    check_pages("linux_first_touch", pages);
    check_threads("linux_first_touch", threads);
    Region region(pages * kPageBytes, "first-touch faults");
    std::uint8_t* const base = region.data();
    // Relaxed atomic stores: in Shared mode threads may write the same byte;
    // on x86 this is a plain store, so the fault is all that is measured.
    Team team(threads, [=](std::uint32_t t) {
        const auto [first, end] = share(pages, threads, t);
        if (sharing == Sharing::Disjoint) {
            for (std::uint64_t p = first; p < end; ++p)
                std::atomic_ref<std::uint8_t>(base[p * kPageBytes]).store(1, std::memory_order_relaxed);
            return;
        }
        const std::uint64_t offset = (t % 64) * 64;
        for (std::uint64_t k = 0, p = first; k < pages; ++k, p = p + 1 == pages ? 0 : p + 1)
            std::atomic_ref<std::uint8_t>(base[p * kPageBytes + offset]).store(1, std::memory_order_relaxed);
    });
    LinuxResult r;
    r.pages = pages;
    r.total_ns = team.run();
    if (inspect) inspect(region.span());
    return r;
}

LinuxResult linux_zap(std::uint64_t bytes, std::uint64_t chunk_bytes, ZapCall call, const Inspect& inspect) {
    check_range("linux_zap", bytes, chunk_bytes);
    Region region(bytes, "the zap range");
    populate(region.span());
    LinuxResult r;
    r.pages = bytes / kPageBytes;
    r.calls = bytes / chunk_bytes;
    const std::span<std::uint8_t> range = region.span();
    if (call == ZapCall::MadviseDontneed) {
        const auto start = Clock::now();
        for (std::uint64_t off = 0; off < bytes; off += chunk_bytes)
            if (::madvise(range.data() + off, chunk_bytes, MADV_DONTNEED) != 0) {
                const int err = errno;
                throw_errno(err, "madvise(MADV_DONTNEED) of " + format_size(chunk_bytes) + " at offset " + hex(off));
            }
        r.total_ns = ns_between(start, Clock::now());
    } else {
        std::uint8_t* const base = region.release();
        const auto start = Clock::now();
        for (std::uint64_t off = 0; off < bytes; off += chunk_bytes)
            if (::munmap(base + off, chunk_bytes) != 0) {
                const int err = errno;
                ::munmap(base + off, bytes - off);
                throw_errno(err, "munmap of " + format_size(chunk_bytes) + " at offset " + hex(off));
            }
        r.total_ns = ns_between(start, Clock::now());
    }
    if (inspect) inspect(range);
    return r;
}

LinuxResult linux_mprotect(std::uint64_t bytes, std::uint64_t chunk_bytes, const Inspect& inspect) {
    check_range("linux_mprotect", bytes, chunk_bytes);
    Region region(bytes, "the mprotect range");
    populate(region.span());
    LinuxResult r;
    for (const int prot : {PROT_READ, PROT_READ | PROT_WRITE}) {
        const auto start = Clock::now();
        for (std::uint64_t off = 0; off < bytes; off += chunk_bytes)
            if (::mprotect(region.data() + off, chunk_bytes, prot) != 0) {
                const int err = errno;
                throw_errno(err, std::string("mprotect(") + ((prot & PROT_WRITE) ? "PROT_READ | PROT_WRITE" : "PROT_READ") +
                                     ") of " + format_size(chunk_bytes) + " at offset " + hex(off));
            }
        r.total_ns += ns_between(start, Clock::now());
        r.pages += bytes / kPageBytes;
        r.calls += bytes / chunk_bytes;
        if (inspect) inspect(region.span());
    }
    return r;
}

} // namespace hv::bench
