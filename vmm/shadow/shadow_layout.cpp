#include "vmm/shadow/shadow_layout.hpp"

#include "mmu/base/units.hpp"
#include "vmm/boot/guest_layout.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <hv/abi.h>

#include <algorithm>

namespace hv {
namespace {
using hv::mmu::kPage;
constexpr std::uint64_t page_up(std::uint64_t v) { return (v + kPage - 1) & ~(kPage - 1); }

static_assert(HV_SHADOW_INFO >= layout::kCmdline + layout::kCmdlineMax && HV_SHADOW_INFO + kPage <= HV_RESERVED_END,
              "hv_shadow_info lies in its own page of the reserved first MiB");
static_assert(sizeof(hv_shadow_info) <= kPage, "hv_shadow_info fits its page");
static_assert(sizeof(hv_shootdown_slot) == 64, "one slot per cache line");

// Tables of one level and below covering `bytes` that start anywhere.
constexpr std::uint64_t tables_covering(std::uint64_t bytes) {
    std::uint64_t n = 0;
    for (unsigned shift = 21; shift <= 39; shift += 9) n += (bytes >> shift) + 2; // PT, PD, PDPT
    return n;
}

} // namespace

std::uint64_t shadow_table_bound(std::uint64_t region_size, std::uint64_t static_bytes) {
    return 2 + 2 * tables_covering(region_size) + tables_covering(static_bytes) * 2;
}

ShadowLayout plan_shadow_layout(std::uint64_t ram_size, std::uint32_t cpus, std::uint64_t image_end,
                                std::uint64_t region_size) {
    if (region_size == 0 || region_size % kPage)
        throw VmmError("--region must be a positive multiple of 4 KiB (got " + std::to_string(region_size) + " bytes)");
    if (region_size > kMaxShadowRegion)
        throw VmmError("--region " + format_size(region_size) + " exceeds the maximum of " +
                       format_size(kMaxShadowRegion));
    ShadowLayout l;
    l.region_size = region_size;
    l.low_end = page_up(image_end < HV_RESERVED_END ? HV_RESERVED_END : image_end);
    l.stacks_top = layout::stacks_top(ram_size);
    if (std::uint64_t{cpus} * HV_STACK_SIZE > l.stacks_top - l.low_end)
        throw VmmError("--mem " + format_size(ram_size) + " cannot hold the image and " + std::to_string(cpus) +
                       " vCPU stacks; raise --mem");
    l.stacks_base = layout::stacks_base(ram_size, cpus);
    const std::uint64_t slots_bytes = std::uint64_t{cpus} * sizeof(hv_shootdown_slot);
    const std::uint64_t unmap_bytes = region_size / kPage * sizeof(std::uint64_t);
    const std::uint64_t shared = page_up(slots_bytes) + 2 * page_up(unmap_bytes);
    if (l.stacks_base < l.low_end + shared)
        throw VmmError("--mem " + format_size(ram_size) + " cannot hold the image, " + std::to_string(cpus) +
                       " vCPU stacks and the shadow-mode shared area (" + format_size(shared) + "); raise --mem");
    l.shared_base = l.stacks_base - shared;
    l.slots = l.shared_base;
    l.unmap_started = l.shared_base + page_up(slots_bytes);
    l.unmap_done = l.unmap_started + page_up(unmap_bytes);
    l.frames_begin = l.low_end;
    l.frames_end = l.shared_base;
    if (l.frames() < kMinShadowFrames)
        throw VmmError("--mem " + format_size(ram_size) + " leaves " + std::to_string(l.frames()) +
                       " frames for the shadow MMU after the image, stacks and shared area; at least " +
                       std::to_string(kMinShadowFrames) + " are needed; raise --mem");
    // Two static ranges: [0, low_end) and [shared_base, stacks_top).
    const std::uint64_t bound = shadow_table_bound(region_size, l.low_end + (l.stacks_top - l.shared_base));
    const std::uint64_t tables = std::min(2 * bound, l.frames() / 2);
    l.tables_end = l.frames_begin + tables * kPage;
    return l;
}

} // namespace hv
