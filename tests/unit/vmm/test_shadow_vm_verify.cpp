// HV_CALL_VERIFY against a whole ShadowVm (no KVM needed): the guest's
// coherence check pauses the host churn instead of stopping it, and the
// lines it makes the VMM print are limited per VM.
#include <doctest/doctest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "hv/abi.h"
#include "mmu/base/units.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/run/hypercall.hpp"
#include "vmm/shadow/shadow_layout.hpp"
#include "vmm/shadow/shadow_vm.hpp"

using hv::GuestMemory;
using hv::handle_hypercall;

namespace {
using hv::mmu::kPage;
constexpr std::uint64_t kRam = 64ull << 20;
constexpr std::uint64_t kRegion = 1ull << 20; // 256 pages
constexpr std::uint64_t kBlock = 0x2000;      // the call block and the table: in the static first MiB
constexpr std::uint64_t kTable = 0x10000;

struct Rig {
    GuestMemory memory{kRam};
    hv::ShadowLayout layout = hv::plan_shadow_layout(kRam, 1, 0x400000, kRegion);
    std::mutex mutex;
    std::vector<std::string> lines;
    std::unique_ptr<hv::ShadowVm> vm;

    explicit Rig(double unmaps_per_second = 0) {
        hv::ShadowOptions o;
        o.region_size = kRegion;
        o.churn_rate[static_cast<std::size_t>(hv::mmu::ChurnOp::Unmap)] = unmaps_per_second;
        vm = std::make_unique<hv::ShadowVm>(memory, layout, 1, o, [](std::uint32_t) {}, [this](const std::string& l) {
            std::lock_guard lock(mutex);
            lines.push_back(l);
        });
    }
    // Host unmaps the churn began, from the counters it keeps in guest RAM.
    std::uint64_t unmaps_begun() const {
        std::uint64_t n = 0;
        for (std::uint64_t p = 0; p < kRegion / kPage; ++p)
            n += std::atomic_ref<std::uint64_t>(*memory.word(layout.unmap_started + 8 * p)).load();
        return n;
    }
    bool unmaps_begin_past(std::uint64_t n) const {
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (unmaps_begun() <= n && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        return unmaps_begun() > n;
    }
    // HV_CALL_VERIFY of `stamps` from vCPU 0; the block as the VMM left it.
    hv_call_verify verify(const std::vector<hv_stamp>& stamps, std::uint64_t guest_lost = 0) {
        REQUIRE(memory.write(kTable, std::span(reinterpret_cast<const std::uint8_t*>(stamps.data()),
                                               stamps.size() * sizeof(hv_stamp))));
        hv_call_verify b{};
        b.hdr = {HV_CALL_VERIFY, sizeof b};
        b.table = kTable;
        b.count = stamps.size();
        b.guest_lost = guest_lost;
        REQUIRE(memory.write_obj(kBlock, b));
        CHECK(handle_hypercall(memory, kBlock, {0, &vm->pager()}).status == HV_OK);
        return *memory.read_obj<hv_call_verify>(kBlock);
    }
    std::vector<std::string> lines_with(const std::string& part) {
        std::lock_guard lock(mutex);
        std::vector<std::string> out;
        std::copy_if(lines.begin(), lines.end(), std::back_inserter(out),
                     [&](const std::string& l) { return l.find(part) != std::string::npos; });
        return out;
    }
};

std::uint64_t ga(std::uint64_t page, std::uint64_t offset = 0) { return HV_SHADOW_REGION_BASE + page * kPage + offset; }

} // namespace

TEST_CASE("ShadowVm: HV_CALL_VERIFY pauses the host churn for the check and the churn goes on after it") {
    Rig rig(20000);
    rig.vm->start_churn();
    REQUIRE(rig.unmaps_begin_past(0));
    for (int i = 0; i < 3; ++i) {
        const hv_call_verify after = rig.verify({{ga(1), 0, 0}, {ga(2, 8), 0, 0}});
        CHECK(after.checked == 2);
        CHECK(after.lost == 0);
        // The guest cannot switch the experiment's churn off by calling VERIFY.
        CHECK(rig.unmaps_begin_past(rig.unmaps_begun()));
    }
    CHECK(rig.vm->audit().empty()); // stops the churn for good
    const std::uint64_t stopped_at = rig.unmaps_begun();
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
    CHECK(rig.unmaps_begun() == stopped_at);
    CHECK(rig.vm->stats().find("host churn           unmap ") != std::string::npos);
}

TEST_CASE("ShadowVm: losses the guest reports are credited to it, and only the VMM's own finds get lost-write lines") {
    Rig rig;
    const hv_call_verify after = rig.verify({{ga(3), 0, 0}}, 1);
    CHECK(after.lost == 1);
    CHECK(after.checked == 1);
    const auto checks = rig.lines_with("coherence check:");
    REQUIRE(checks.size() == 1);
    CHECK(checks[0] == "coherence check: 1 stamps checked, 0 lost at the end, 1 reported lost by the guest (seen while "
                       "running): lost_writes=1");
    CHECK(rig.lines_with("lost write").empty());
}

TEST_CASE("ShadowVm: coherence-check and lost-write lines are limited per VM, the counts printed when it goes") {
    Rig rig;
    // A value on a page never written reads back as 0: lost, one line each.
    const std::vector<hv_stamp> wrong{{ga(4), 7, 0}, {ga(5), 8, 0}, {ga(6), 9, 0}};
    for (int i = 0; i < 20; ++i) CHECK(rig.verify(wrong).lost == 3);
    CHECK(rig.lines_with("coherence check:").size() == hv::GuestLog::kListed);
    CHECK(rig.lines_with("lost write: ").size() == hv::GuestLog::kListed);
    rig.vm.reset();
    const auto more = rig.lines_with("... and ");
    REQUIRE(more.size() == 2);
    CHECK(std::count(more.begin(), more.end(),
                     "... and " + std::to_string(60 - hv::GuestLog::kListed) + " more lost-write lines (suppressed)") == 1);
    CHECK(std::count(more.begin(), more.end(),
                     "... and " + std::to_string(20 - hv::GuestLog::kListed) + " more coherence-check lines (suppressed)") ==
          1);
}
