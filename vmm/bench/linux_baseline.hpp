#pragma once
// The Linux kernel's primary MMU doing the work our secondary MMU does, timed
// on the same machine, so `vmm bench` can report the two side by side
// (DESIGN.md "Honest measurement"): first-touch faults, userfaultfd demand
// paging, zapping a populated range and write-protecting one.
//
// Every function maps a fresh anonymous region (2 MiB aligned, MAP_NORESERVE,
// MADV_NOHUGEPAGE so each fault, zap and protection change is a 4 KiB one),
// times only the work named, and leaves nothing mapped when it returns.
// Bad arguments throw std::invalid_argument ("...: expected X, got Y"); a host
// refusal (mmap ENOMEM, a failing madvise/munmap/mprotect) throws
// std::system_error naming the call.
#include "mmu/soft/soft_vcpu.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>

namespace hv::bench {

inline constexpr std::uint64_t kPageBytes = 4096;
inline constexpr std::uint64_t kHugeBytes = 2ull << 20;
inline constexpr std::uint64_t kMaxBytes = 4ull << 30;
inline constexpr std::uint32_t kMaxThreads = 1024;

// Sharing (the software vCPUs' enum, soft_vcpu.hpp) in linux_first_touch:
// Disjoint: thread t faults its own contiguous share of the pages.
// Shared: every thread touches every page, thread t starting at the first
// page of what would be its disjoint share and wrapping around, and writing
// to byte (t % 64) * 64 so that threads collide on the page, not on one line.
using mmu::Sharing;

enum class ZapCall { MadviseDontneed, Munmap };

struct LinuxResult {
    bool available = true;          // false: the kernel refused the mechanism
    std::string unavailable_reason; // what was called and the errno text
    std::uint64_t pages = 0;        // 4 KiB pages the timed passes worked on, once per pass
    std::uint64_t calls = 0;        // system calls the timed passes made (uffd: UFFDIO_COPYs)
    std::uint64_t total_ns = 0;     // steady_clock, the timed passes only

    double ns_per_page() const;
    double ns_per_call() const;     // 0 when no calls were made
    double pages_per_second() const;
};

// Called after each timed pass, outside the timing, with the region's address
// range: lets a caller check what the pass did (tests; sanity checks in the
// bench). After a munmap zap the range is no longer mapped, so only address
// queries (mincore) are meaningful then.
using Inspect = std::function<void(std::span<std::uint8_t> region)>;

// `threads` (1..kMaxThreads) threads, released together, write one byte to
// every page of a fresh `pages`-page region (1..kMaxBytes / kPageBytes);
// timed from the release to the last thread's finish. Each page reads 1 at
// the byte(s) written. pages = the region's pages whatever the sharing.
LinuxResult linux_first_touch(std::uint64_t pages, std::uint32_t threads, Sharing sharing,
                              const Inspect& inspect = {});

// As linux_first_touch (Disjoint), but the region is registered with
// userfaultfd (missing faults) and the threads read: one handler thread
// resolves each fault with UFFDIO_COPY of a 4 KiB page holding
// uffd_pattern_byte(page index, offset). calls = the UFFDIO_COPYs made. Not
// available (no throw) when the kernel refuses userfaultfd to this process.
LinuxResult uffd_copy_faults(std::uint64_t pages, std::uint32_t threads, const Inspect& inspect = {});

// Populates `bytes` (a multiple of kPageBytes up to kMaxBytes) by writing 1 to
// the first byte of every page, then drops it all with one `call` per
// `chunk_bytes` (a multiple of kPageBytes dividing bytes). pages = bytes / 4 KiB,
// calls = bytes / chunk_bytes.
LinuxResult linux_zap(std::uint64_t bytes, std::uint64_t chunk_bytes, ZapCall call, const Inspect& inspect = {});

// Populates as linux_zap, then two timed passes of mprotect per `chunk_bytes`:
// PROT_READ, then PROT_READ | PROT_WRITE (inspect runs after each).
// pages = 2 * bytes / 4 KiB, calls = 2 * bytes / chunk_bytes.
LinuxResult linux_mprotect(std::uint64_t bytes, std::uint64_t chunk_bytes, const Inspect& inspect = {});

// Pages of `range` that mincore() reports resident; throws std::system_error
// when any part of it is unmapped (ENOMEM) or its start is not page-aligned.
std::uint64_t resident_pages(std::span<const std::uint8_t> range);

// What uffd_copy_faults' handler copies into page `page`: the page index,
// little-endian, in the first 8 bytes (so a copy to the wrong page shows),
// then 0xa5 ^ offset (so a zero page shows).
constexpr std::uint8_t uffd_pattern_byte(std::uint64_t page, std::size_t offset) {
    return offset < 8 ? static_cast<std::uint8_t>(page >> (8 * offset))
                      : static_cast<std::uint8_t>(0xa5 ^ (offset & 0xff));
}

} // namespace hv::bench
