#pragma once
// `vmm bench zap`: the cost of dropping a populated range from a secondary
// MMU, per 4 KiB entry. The host unmaps the range either with one
// invalidate_range_start/end pair (call `range`: the shadow MMU zaps it in
// batches of `batch` entries per lock hold) or page by page with
// invalidate_page (call `page`, the 2008 shape: one lock hold and one
// shootdown per entry), or mprotects it read-only and back (call `protect`:
// two range pairs; the first drops every entry); and, with no host call, the
// shadow MMU zapping the guest range by itself per batch (call `guest`:
// its own cost measured directly, not as a difference). Two subscribers: the
// shadow MMU (rw lock policy, one vCPU, which installed every entry, so
// every batch has one shootdown target) and the external TLB (one vCPU whose
// TLB holds every page; a flush call is one write to the device, counted as
// a hold). The 2008 baseline is there too: the shadow MMU under the global
// lock policy, page by page (`shadow-global`, call `page`). The same host
// call with no subscriber is measured too, so a subscriber's share is the
// difference (column own_ns_per_page: paired per repeat, repeats interleaved
// across configurations); and Linux doing the
// primary-MMU version on this machine: madvise(DONTNEED) and munmap per
// 4 KiB call and per 2 MiB call, mprotect of the whole range there and back.
#include "vmm/bench/bench_report.hpp"

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace hv::bench {

struct ZapBenchConfig {
    std::vector<std::uint64_t> sizes{std::uint64_t{2} << 20, std::uint64_t{64} << 20, std::uint64_t{1} << 30,
                                     std::uint64_t{4} << 30};
    std::vector<std::size_t> batches{1, 64, 512, 0}; // 0: unlimited
    unsigned repeat = 3;
    bool linux_baseline = true;
    std::function<void(std::size_t done, std::size_t total, const std::string& what)> progress;
};

// The --quick sweep: sizes 2 MiB and 64 MiB, one repeat.
ZapBenchConfig quick_zap_config();

// Throws std::invalid_argument for a size that is not a positive multiple of
// 2 MiB or above 4 GiB, or repeat 0.
BenchReport run_zap_bench(const ZapBenchConfig& config);

} // namespace hv::bench
