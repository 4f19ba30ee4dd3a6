#pragma once
// `vmm bench zap`: the cost of dropping a populated range from a secondary
// MMU, per 4 KiB entry. The host unmaps the range either with one
// invalidate_range_start/end pair (the shadow MMU zaps it in batches of
// `batch` entries per lock hold) or page by page with invalidate_page (the
// 2008 shape: one lock hold and one shootdown per entry). The same unmap
// with no subscriber is measured too, so the secondary MMU's share is the
// difference; and Linux doing the primary-MMU version (madvise(DONTNEED)
// and munmap, per 4 KiB call and per 2 MiB call) on this machine.
#include "bench_report.hpp"

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
