// plan_shadow_layout (vmm/shadow/shadow_layout.hpp): where shadow mode puts the
// frame space, the shared area (shootdown slots, unmap counters) and the
// vCPU stacks in guest-physical memory, and the errors that name --mem or
// --region when the pieces do not fit.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <string>

#include "hv/abi.h"
#include "mmu/base/units.hpp"
#include "tests/support/text_match.hpp"
#include "vmm/boot/guest_layout.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/shadow/shadow_layout.hpp"

using hv::kMaxShadowRegion;
using hv::kMinShadowFrames;
using hv::plan_shadow_layout;
using hv::shadow_table_bound;
using hv::ShadowLayout;
using hv::test::contains;
using hv::test::message_of;

namespace {
using hv::mmu::kPage;
constexpr std::uint64_t kMiB = 1ull << 20;
constexpr std::uint64_t kGiB = 1ull << 30;

// The message of the VmmError plan_shadow_layout throws, or "" when it returns.
std::string layout_error(std::uint64_t ram, std::uint32_t cpus, std::uint64_t image_end, std::uint64_t region) {
    return message_of<hv::VmmError>([&] { (void)plan_shadow_layout(ram, cpus, image_end, region); });
}

// Everything abi.h and shadow_layout.hpp promise about a layout.
void check_layout(const ShadowLayout& l, std::uint64_t ram, std::uint32_t cpus, std::uint64_t image_end,
                  std::uint64_t region) {
    CAPTURE(ram);
    CAPTURE(cpus);
    CAPTURE(image_end);
    CAPTURE(region);
    const std::uint64_t pages = region / kPage;
    // Ordered and disjoint.
    CHECK(l.low_end <= l.frames_begin);
    CHECK(l.frames_begin < l.frames_end);
    CHECK(l.frames_end <= l.shared_base);
    CHECK(l.shared_base <= l.slots);
    CHECK(l.slots + std::uint64_t{cpus} * sizeof(hv_shootdown_slot) <= l.unmap_started);
    CHECK(l.unmap_started + pages * sizeof(std::uint64_t) <= l.unmap_done);
    CHECK(l.unmap_done + pages * sizeof(std::uint64_t) <= l.stacks_base);
    CHECK(l.stacks_base < l.stacks_top);
    CHECK(l.stacks_top <= ram);
    // The arrays sit in the shared area, which ends where the stacks begin.
    CHECK(l.slots == l.shared_base);
    CHECK(l.unmap_started > l.slots);
    CHECK(l.unmap_done > l.unmap_started);
    // Page aligned.
    CHECK(l.low_end % kPage == 0);
    CHECK(l.frames_begin % kPage == 0);
    CHECK(l.frames_end % kPage == 0);
    CHECK(l.shared_base % kPage == 0);
    CHECK(l.slots % kPage == 0);
    CHECK(l.unmap_started % kPage == 0);
    CHECK(l.unmap_done % kPage == 0);
    CHECK(l.stacks_base % kPage == 0);
    CHECK(l.stacks_top % kPage == 0);
    // The image and the reserved MiB lie below low_end.
    CHECK(l.low_end >= HV_RESERVED_END);
    CHECK(l.low_end >= image_end);
    CHECK(l.low_end - image_end < kPage + (image_end < HV_RESERVED_END ? HV_RESERVED_END - image_end : 0));
    // hv_shadow_info lies in the low static range (mapped, never a frame).
    CHECK(HV_SHADOW_INFO + sizeof(hv_shadow_info) <= l.low_end);
    CHECK(HV_SHADOW_INFO + sizeof(hv_shadow_info) <= l.frames_begin);
    // The stacks are exactly those of identity mode.
    CHECK(l.stacks_top == hv::layout::stacks_top(ram));
    CHECK(l.stacks_base == hv::layout::stacks_base(ram, cpus));
    CHECK(l.stacks_top - l.stacks_base == std::uint64_t{cpus} * HV_STACK_SIZE);
    // Sizes.
    CHECK(l.region_size == region);
    CHECK(l.frames() == (l.frames_end - l.frames_begin) / kPage);
    CHECK(l.frames() >= kMinShadowFrames);
    // Everything the guest reaches statically lies below 4 GiB.
    CHECK(l.stacks_top <= 4 * kGiB);
    // The table pool comes first, never more than half the frame space, and
    // as much of the bound (doubled) as that allows; data pages get the rest.
    CHECK(l.frames_begin < l.tables_end);
    CHECK(l.tables_end < l.frames_end);
    CHECK(l.tables_end % kPage == 0);
    CHECK(l.table_frames() <= l.frames() / 2);
    const std::uint64_t bound = shadow_table_bound(region, l.low_end + (l.stacks_top - l.shared_base));
    CHECK(l.table_frames() == std::min(2 * bound, l.frames() / 2));
}

} // namespace

TEST_CASE("plan_shadow_layout: a typical layout, region by region") {
    const std::uint64_t ram = 64 * kMiB, image_end = 0x180123, region = 32 * kMiB;
    const std::uint32_t cpus = 4;
    const ShadowLayout l = plan_shadow_layout(ram, cpus, image_end, region);
    check_layout(l, ram, cpus, image_end, region);
    CHECK(l.low_end == 0x181000);
    CHECK(l.frames_begin == 0x181000);
    CHECK(l.stacks_top == ram);
    CHECK(l.stacks_base == ram - 4 * HV_STACK_SIZE);
    // 4 slots of 64 bytes round up to a page; 8192 region pages need 64 KiB per counter array.
    CHECK(l.unmap_started == l.slots + kPage);
    CHECK(l.unmap_done == l.unmap_started + 64 * 1024);
    CHECK(l.stacks_base == l.unmap_done + 64 * 1024);
    CHECK(l.frames_end == l.shared_base);
    CHECK(l.frames() == (l.shared_base - 0x181000) / kPage);
    // 32 MiB of region: 16 leaf, 1 directory and 1 pointer table in each of
    // the host and shadow tables, with slack, are far below half the frames.
    CHECK(shadow_table_bound(region, 2 * kMiB) < 100);
    CHECK(l.table_frames() == 2 * shadow_table_bound(region, l.low_end + (l.stacks_top - l.shared_base)));
}

TEST_CASE("shadow_table_bound: grows with the region, one leaf table per 2 MiB on each side") {
    const std::uint64_t small = shadow_table_bound(2 * kMiB, 0), big = shadow_table_bound(1024 * kMiB, 0);
    CHECK(big - small >= 2 * (512 - 1)); // 512 leaf tables for 1 GiB instead of 1, host and shadow
    CHECK(shadow_table_bound(kMaxShadowRegion, 0) > 2 * (kMaxShadowRegion >> 21));
}

TEST_CASE("plan_shadow_layout: an image below the reserved MiB still starts the frames at 1 MiB") {
    const ShadowLayout l = plan_shadow_layout(16 * kMiB, 1, 0, kPage);
    check_layout(l, 16 * kMiB, 1, 0, kPage);
    CHECK(l.low_end == HV_RESERVED_END);
    CHECK(l.frames_begin == HV_RESERVED_END);
}

TEST_CASE("plan_shadow_layout: invariants hold over a sweep of sizes") {
    const std::uint64_t rams[] = {4 * kMiB, 8 * kMiB, 64 * kMiB + 12 * kPage, kGiB, 3 * kGiB + 5 * kPage, 4 * kGiB,
                                  6 * kGiB};
    const std::uint32_t cpus_list[] = {1, 2, 63, 64, 65};
    const std::uint64_t images[] = {0, HV_RESERVED_END, HV_RESERVED_END + 1, 0x200fff};
    const std::uint64_t regions[] = {kPage, 3 * kPage, 2 * kMiB, 32 * kMiB + kPage, kGiB};
    int planned = 0;
    for (std::uint64_t ram : rams)
        for (std::uint32_t cpus : cpus_list)
            for (std::uint64_t image : images)
                for (std::uint64_t region : regions) {
                    const std::uint64_t stacks = std::uint64_t{cpus} * HV_STACK_SIZE;
                    if (stacks + 2 * kMiB >= hv::layout::stacks_top(ram)) continue; // no room at all: not this test
                    std::string error;
                    ShadowLayout l;
                    try {
                        l = plan_shadow_layout(ram, cpus, image, region);
                    } catch (const hv::VmmError& e) {
                        error = e.what();
                    }
                    // Either a layout that keeps every promise or an error naming --mem.
                    if (error.empty()) {
                        ++planned;
                        check_layout(l, ram, cpus, image, region);
                    } else {
                        CAPTURE(error);
                        CHECK(contains(error, "--mem"));
                        // It is only refused when the pieces really do not fit.
                        const std::uint64_t low = (std::max<std::uint64_t>(image, HV_RESERVED_END) + kPage - 1) & ~(kPage - 1);
                        const std::uint64_t shared = ((std::uint64_t{cpus} * 64 + kPage - 1) & ~(kPage - 1)) +
                                                     2 * (((region / kPage * 8) + kPage - 1) & ~(kPage - 1));
                        const std::uint64_t base = hv::layout::stacks_base(ram, cpus);
                        CHECK((base < low + shared || (base - shared - low) / kPage < kMinShadowFrames));
                    }
                }
    CHECK(planned > 100);
}

TEST_CASE("plan_shadow_layout: the region must be a positive multiple of 4 KiB") {
    for (std::uint64_t region : {std::uint64_t{0}, std::uint64_t{1}, kPage - 1, kPage + 1, 32 * kMiB + 512}) {
        CAPTURE(region);
        const std::string e = layout_error(64 * kMiB, 1, 0, region);
        CHECK(contains(e, "--region"));
        CHECK_FALSE(contains(e, "--mem"));
    }
    CHECK(contains(layout_error(64 * kMiB, 1, 0, 0), "4 KiB"));
}

TEST_CASE("plan_shadow_layout: the region may not exceed kMaxShadowRegion") {
    const std::string e = layout_error(2 * kGiB, 1, 0, kMaxShadowRegion + kPage);
    CHECK(contains(e, "--region"));
    CHECK(contains(e, "64 GiB"));
    CHECK(contains(layout_error(2 * kGiB, 1, 0, 2 * kMaxShadowRegion), "--region"));
    CHECK(contains(layout_error(2 * kGiB, 1, 0, ~0ull & ~(kPage - 1)), "--region"));
    // The maximum itself is accepted when RAM holds its counters (2 x 128 MiB).
    const ShadowLayout l = plan_shadow_layout(2 * kGiB, 1, 0, kMaxShadowRegion);
    check_layout(l, 2 * kGiB, 1, 0, kMaxShadowRegion);
    CHECK(l.unmap_done - l.unmap_started == kMaxShadowRegion / kPage * 8);
}

TEST_CASE("plan_shadow_layout: RAM too small for the shared area names --mem") {
    // A 64 GiB region needs 256 MiB of unmap counters: not in 64 MiB of RAM.
    const std::string e = layout_error(64 * kMiB, 2, 0, kMaxShadowRegion);
    CHECK(contains(e, "--mem"));
    CHECK(contains(e, "64 MiB"));
    CHECK(contains(e, "shared area"));
    CHECK_FALSE(contains(e, "--region"));
    // An image that reaches the stacks leaves no room either.
    CHECK(contains(layout_error(8 * kMiB, 1, 8 * kMiB - HV_STACK_SIZE, kPage), "--mem"));
    CHECK(contains(layout_error(8 * kMiB, 1, 8 * kMiB, kPage), "--mem"));
}

TEST_CASE("plan_shadow_layout: kMinShadowFrames is the exact lower bound of the frame space") {
    // 1 vCPU, 1-page region: shared = 1 slot page + 2 counter pages; stacks = 16 KiB.
    const std::uint64_t fixed = HV_RESERVED_END + 3 * kPage + HV_STACK_SIZE;
    const std::uint64_t exact = fixed + kMinShadowFrames * kPage;
    const ShadowLayout l = plan_shadow_layout(exact, 1, 0, kPage);
    check_layout(l, exact, 1, 0, kPage);
    CHECK(l.frames() == kMinShadowFrames);

    const std::string e = layout_error(exact - kPage, 1, 0, kPage);
    CAPTURE(e);
    CHECK(contains(e, "--mem"));
    CHECK(contains(e, std::to_string(kMinShadowFrames - 1) + " frames"));
    CHECK(contains(e, std::to_string(kMinShadowFrames)));
    // No frames at all.
    CHECK(contains(layout_error(fixed, 1, 0, kPage), "--mem"));
}

TEST_CASE("plan_shadow_layout: RAM above 4 GiB leaves the stacks and the shared area under 4 GiB") {
    for (std::uint64_t ram : {4 * kGiB, 4 * kGiB + kPage, 8 * kGiB, 64 * kGiB}) {
        CAPTURE(ram);
        const ShadowLayout l = plan_shadow_layout(ram, 8, 0x300000, 32 * kMiB);
        check_layout(l, ram, 8, 0x300000, 32 * kMiB);
        CHECK(l.stacks_top == 4 * kGiB);
        CHECK(l.stacks_base == 4 * kGiB - 8 * HV_STACK_SIZE);
        CHECK(l.shared_base < 4 * kGiB);
        CHECK(l.unmap_done < 4 * kGiB);
        CHECK(l.frames_end <= 4 * kGiB);
    }
}

TEST_CASE("plan_shadow_layout: more stacks than RAM is an error, not a wrapped layout") {
    // 300 stacks of 16 KiB are 4.7 MiB: more than 4 MiB of RAM. The layout
    // must refuse this (naming --mem) instead of computing stacks_base by
    // unsigned wrap-around below 0.
    const std::uint64_t ram = 4 * kMiB;
    const std::uint32_t cpus = 300;
    REQUIRE(std::uint64_t{cpus} * HV_STACK_SIZE > ram);
    std::string error;
    ShadowLayout l;
    try {
        l = plan_shadow_layout(ram, cpus, 0, kPage);
    } catch (const hv::VmmError& e) {
        error = e.what();
    }
    CAPTURE(l.stacks_base);
    CAPTURE(l.frames_end);
    CHECK(contains(error, "--mem"));
    if (error.empty()) {
        // What a wrapped layout looks like: every address past the end of RAM.
        CHECK(l.stacks_base <= l.stacks_top);
        CHECK(l.frames_end <= ram);
    }
}
