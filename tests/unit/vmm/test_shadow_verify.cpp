// The end-of-run coherence check (abi.h: HV_CALL_VERIFY, struct hv_stamp):
// MmuPager::verify over a small MMU -- which stamps count as lost, what the
// unmap counters excuse, and what the report says. The hypercall layer around it
// is in test_shadow_hypercalls.cpp.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hv/abi.h"
#include "tests/support/shadow_pager_fixture.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/shadow/mmu_pager.hpp"

using namespace shadow_fixture;

// ---------------------------------------------------------------------------
// MmuPager::verify

TEST_CASE("MmuPager::verify: stamps that match count nothing lost") {
    VerifyRig rig;
    rig.write(ga(0), 0x1111);
    rig.write(ga(0, 8), 0x2222);
    rig.write(ga(5, 4088), 0xfeedface);
    const auto r = rig.verify({{ga(0), 0x1111, 0}, {ga(0, 8), 0x2222, 0}, {ga(5, 4088), 0xfeedface, 0}});
    CHECK(r.status == HV_OK);
    CHECK(r.lost == 0);
    CHECK(r.checked == 3);
    CHECK(rig.lost_writes().empty());
    CHECK(rig.lines("coherence check: ") ==
          std::vector<std::string>{"coherence check: 3 stamps checked, 0 lost at the end, 0 reported lost by the guest "
                                   "(seen while running): lost_writes=0"});
}

TEST_CASE("MmuPager::verify: a wrong value is lost and reported with the address and both values") {
    VerifyRig rig;
    rig.write(ga(2, 16), 0x1234);
    const auto r = rig.verify({{ga(2, 16), 0x5678, 0}, {ga(2, 24), 0, 0}});
    CHECK(r.status == HV_OK);
    CHECK(r.lost == 1);
    CHECK(r.checked == 2);
    const auto lost = rig.lost_writes();
    REQUIRE(lost.size() == 1);
    CAPTURE(lost[0]);
    CHECK(contains(lost[0], hv::hex(ga(2, 16))));
    CHECK(contains(lost[0], "expected " + hv::hex(0x5678)));
    CHECK(contains(lost[0], "found " + hv::hex(0x1234)));
}

TEST_CASE("MmuPager::verify: value 0 on a never-present page is fine and allocates nothing") {
    VerifyRig rig;
    REQUIRE_FALSE(rig.present(ga(7)));
    const std::uint64_t frames_before = rig.frames.counters().in_use;
    const auto r = rig.verify({{ga(7), 0, 0}, {ga(7, 4000), 0, 0}});
    CHECK(r.status == HV_OK);
    CHECK(r.lost == 0);
    CHECK(r.checked == 2);
    CHECK_FALSE(rig.present(ga(7)));
    CHECK(rig.frames.counters().in_use == frames_before);
}

TEST_CASE("MmuPager::verify: value 0 on a present page reads the word") {
    VerifyRig rig;
    rig.write(ga(3, 64), 0x77);
    // The next word of the page was never written: still 0, fine.
    CHECK(rig.verify({{ga(3, 72), 0, 0}}).lost == 0);
    // The written word is not 0: a stamp claiming "never written" is lost.
    const auto r = rig.verify({{ga(3, 64), 0, 0}});
    CHECK(r.lost == 1);
    REQUIRE(rig.lost_writes().size() == 1);
    CHECK(contains(rig.lost_writes()[0], "found " + hv::hex(0x77)));
}

TEST_CASE("MmuPager::verify: a value unmapped after the write is excused only by an unfinished unmap") {
    VerifyRig rig;
    rig.write(ga(4, 32), 0xabc);
    REQUIRE(rig.host.unmap({kHost + 4 * kPage, kHost + 5 * kPage}) == 1);
    rig.unmaps[4] = 3; // three unmaps of page 4 have begun

    // The guest read unmap_done = 2 before its write: the third unmap had
    // not finished, so it may have discarded the value.
    auto r = rig.verify({{ga(4, 32), 0xabc, 2}});
    CHECK(r.lost == 0);
    CHECK(r.checked == 1);
    // unmap_done = 3: every unmap that began had finished before the write.
    r = rig.verify({{ga(4, 32), 0xabc, 3}});
    CHECK(r.lost == 1);
    REQUIRE(rig.lost_writes().size() == 1);
    CHECK(contains(rig.lost_writes()[0], "found " + hv::hex(0)));
    // A wrong non-zero value is lost whatever the unmap counters say.
    rig.write(ga(4, 32), 0xdef);
    r = rig.verify({{ga(4, 32), 0xabc, 0}});
    CHECK(r.lost == 1);
}

TEST_CASE("MmuPager::verify: without unmap counters a value read back as 0 is lost") {
    VerifyRig rig(false);
    rig.write(ga(1), 0x99);
    REQUIRE(rig.host.unmap({kHost + kPage, kHost + 2 * kPage}) == 1);
    CHECK(rig.verify({{ga(1), 0x99, 0}}).lost == 1);
}

TEST_CASE("MmuPager::verify: a swapped-out page is read back in") {
    VerifyRig rig;
    rig.write(ga(6, 8), 0x4242);
    REQUIRE(rig.host.swap_out(kHost + 6 * kPage));
    REQUIRE_FALSE(rig.present(ga(6)));
    const auto r = rig.verify({{ga(6, 8), 0x4242, 0}});
    CHECK(r.lost == 0);
    CHECK(r.checked == 1);
}

TEST_CASE("MmuPager::verify: value 0 on a swapped-out page that holds a non-zero word is lost") {
    // abi.h: a value of 0 means never written and must read 0. The word is
    // 0x4242 in the swapped-out contents, so the stamp is lost; verify must
    // not treat a swapped-out page like a never-present one.
    VerifyRig rig;
    rig.write(ga(6, 8), 0x4242);
    REQUIRE(rig.host.swap_out(kHost + 6 * kPage));
    const auto r = rig.verify({{ga(6, 8), 0, 0}});
    CHECK(r.checked == 1);
    CHECK(r.lost == 1);
}

TEST_CASE("MmuPager::verify: guest_lost is added to the total and reports only what the VMM found") {
    VerifyRig rig;
    rig.write(ga(0), 1);
    auto r = rig.verify({{ga(0), 1, 0}}, 5);
    CHECK(r.lost == 5);
    CHECK(rig.lost_writes().empty());
    r = rig.verify({{ga(0), 2, 0}}, 5);
    CHECK(r.lost == 6);
    CHECK(rig.lost_writes().size() == 1);
    r = rig.verify({}, HV_VERIFY_MAX);
    CHECK(r.status == HV_OK);
    CHECK(r.lost == HV_VERIFY_MAX);
    CHECK(r.checked == 0);
}

TEST_CASE("MmuPager::verify: every loss counted, the first GuestLog::kListed per pager reported, then a count") {
    VerifyRig rig;
    std::vector<hv_stamp> stamps;
    for (std::uint64_t i = 0; i < 15; ++i) {
        rig.write(ga(0, 8 * i), 100 + i);
        stamps.push_back({ga(0, 8 * i), 200 + i, 0});
    }
    std::vector<std::string> reports;
    auto lost_writes = [&] {
        return static_cast<std::uint64_t>(std::count_if(reports.begin(), reports.end(),
                                                        [](const std::string& l) { return l.starts_with("lost write: "); }));
    };
    {
        hv::MmuPager::Setup setup;
        setup.region = {kRegion, kRegion + kRegionPages * kPage};
        setup.log = [&](std::string_view line) { reports.emplace_back(line); };
        hv::MmuPager pager(rig.shadow, rig.host, std::move(setup));
        std::uint64_t lost = 0, checked = 0;
        CHECK(pager.verify(stamps, 3, lost, checked) == HV_OK);
        CHECK(lost == 18);
        CHECK(checked == 15);
        REQUIRE(lost_writes() == hv::GuestLog::kListed);
        CHECK(reports[0] == "lost write: " + hv::hex(ga(0)) + " expected 0xc8, found 0x64");
        // The limit is the pager's, not the call's: calling again adds no lines.
        CHECK(pager.verify(stamps, 0, lost, checked) == HV_OK);
        CHECK(lost == 15);
        CHECK(lost_writes() == hv::GuestLog::kListed);
    }
    // The pager's end prints the count (two coherence-check lines are within their limit).
    REQUIRE(reports.size() == hv::GuestLog::kListed + 2 + 1);
    CHECK(reports.back() == "... and " + std::to_string(30 - hv::GuestLog::kListed) + " more lost-write lines (suppressed)");
}

TEST_CASE("MmuPager::verify: an address inside the region but outside every memslot is lost") {
    VerifyRig rig;
    const auto r = rig.verify({{ga(kSlotPages), 0, 0}, {ga(kRegionPages - 1, kPage - 8), 5, 0}});
    CHECK(r.status == HV_OK);
    CHECK(r.checked == 2);
    CHECK(r.lost == 2);
    REQUIRE(rig.lost_writes().size() == 2);
    CHECK(contains(rig.lost_writes()[0], "outside every memslot"));
}

TEST_CASE("MmuPager::verify: a stamp outside the region or misaligned is HV_E_BAD_ARG before anything is compared") {
    VerifyRig rig;
    rig.write(ga(0), 1);
    const hv_stamp good{ga(0), 1, 0};
    const hv_stamp bad[] = {
        {kRegion - 8, 0, 0},                             // just below the region
        {ga(kRegionPages), 0, 0},                        // just past its end
        {ga(0, 4), 1, 0},                                // not 8-byte aligned
        {ga(0, 1), 1, 0},
        {0, 0, 0},
        {~0ull & ~7ull, 0, 0},
    };
    for (const hv_stamp& b : bad) {
        CAPTURE(b.address);
        const auto r = rig.verify({good, b, good}, 2);
        CHECK(r.status == HV_E_BAD_ARG);
        CHECK(r.checked == 0);
    }
    CHECK(rig.reports.empty()); // neither a lost write nor a coherence check
    // The last word of the region is fine.
    CHECK(rig.verify({{ga(kRegionPages - 1, kPage - 8), 0, 0}}).status == HV_OK);
    CHECK(rig.checks() == 1);
}

TEST_CASE("MmuPager::verify: every good call compares and reports once, even for an empty table") {
    VerifyRig rig;
    CHECK(rig.verify({}).status == HV_OK);
    CHECK(rig.checks() == 1);
    rig.write(ga(1), 3);
    CHECK(rig.verify({{ga(1), 3, 0}, {ga(2), 0, 0}}).status == HV_OK);
    CHECK(rig.checks() == 2);
}
