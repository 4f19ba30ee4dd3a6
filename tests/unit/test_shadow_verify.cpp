// The end-of-run coherence check (abi.h: HV_CALL_VERIFY, struct hv_stamp):
// MmuPager::verify over a small MMU, the hypercall's argument checks and
// write-back, and --strict-faults: a page fault the pager cannot resolve
// becomes a crash report with the faulting context the guest passed.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "exit_dispatch.hpp"
#include "exit_dispatch_fixture.hpp"
#include "format.hpp"
#include "guest_memory.hpp"
#include "hv/abi.h"
#include "hypercall.hpp"
#include "shadow_pager.hpp"

using hv::GuestMemory;
using hv::handle_hypercall;
using hv::HypercallContext;
namespace mmu = hv::mmu;

namespace {

constexpr std::uint64_t kPage = 4096;
constexpr std::uint64_t kHost = 0x7f0000000000;
constexpr std::uint64_t kRegion = HV_SHADOW_REGION_BASE;
constexpr std::uint64_t kRegionPages = 16;
constexpr std::uint64_t kSlotPages = 12; // the memslot covers only the first 12 pages of the region

bool contains(const std::string& haystack, const std::string& needle) {
    return haystack.find(needle) != std::string::npos;
}

// A region of 16 pages at kRegion; the memslot maps its first 12 onto an
// anonymous host mapping at kHost. Counts the hook calls.
struct VerifyRig {
    mmu::FrameSpace frames{128};
    mmu::HostAddressSpace host{frames};
    mmu::ShadowMmu shadow{host, {mmu::LockPolicy::Rw, mmu::CoherencePolicy::Seq, 512, 1}};
    int quiesces = 0;
    std::vector<std::string> reports;
    std::vector<std::uint64_t> unmaps_asked; // pages unmaps_started was asked about
    std::uint64_t unmaps[kRegionPages] = {};  // unmap_started[page] as the VMM counts it
    hv::MmuPager pager;

    explicit VerifyRig(bool with_unmap_hook = true)
        : pager(shadow, host, kRegion, kRegionPages * kPage, hooks(with_unmap_hook)) {
        host.map_anonymous({kHost, kHost + kSlotPages * kPage}, true);
        shadow.add_memslot({1, kRegion, kSlotPages * kPage, kHost, true});
    }
    hv::MmuPager::Hooks hooks(bool with_unmap_hook) {
        hv::MmuPager::Hooks h;
        h.quiesce = [this] { ++quiesces; };
        if (with_unmap_hook)
            h.unmaps_started = [this](std::uint64_t page) {
                unmaps_asked.push_back(page);
                return page < kRegionPages ? unmaps[page] : 0;
            };
        h.report = [this](const std::string& line) { reports.push_back(line); };
        return h;
    }
    // The guest writes `value` at region address `ga` (through the host tables).
    void write(std::uint64_t ga, std::uint64_t value) {
        const std::uint64_t ha = kHost + (ga - kRegion);
        const mmu::HostFaultResult r = host.fault(ha, mmu::Access::Write);
        REQUIRE(r.status == mmu::HostFaultStatus::Mapped);
        std::memcpy(frames.bytes(r.translation.pfn).data() + ha % kPage, &value, sizeof value);
    }
    bool present(std::uint64_t ga) const { return host.lookup(kHost + (ga - kRegion)).has_value(); }

    struct Result {
        std::uint32_t status;
        std::uint64_t lost, checked;
    };
    Result verify(const std::vector<hv_stamp>& stamps, std::uint64_t guest_lost = 0) {
        Result r{~0u, ~0ull, ~0ull};
        r.status = pager.verify(stamps, guest_lost, r.lost, r.checked);
        return r;
    }
};

std::uint64_t ga(std::uint64_t page, std::uint64_t offset = 0) { return kRegion + page * kPage + offset; }

// A pager that records what the hypercall layer hands it.
struct FakePager final : hv::ShadowPager {
    std::uint32_t answer = HV_OK;
    std::vector<std::uint32_t> fault_vcpus;
    std::vector<std::uint64_t> fault_addresses;
    int verifies = 0;
    std::vector<hv_stamp> stamps;
    std::uint64_t guest_lost_seen = ~0ull;
    std::uint64_t lost_answer = 0;
    std::optional<std::uint64_t> allowed_end; // block_allowed: only [0, allowed_end) when set
    std::uint32_t page_fault(std::uint32_t vcpu, std::uint64_t address, std::uint32_t) override {
        fault_vcpus.push_back(vcpu);
        fault_addresses.push_back(address);
        return answer;
    }
    std::uint32_t host_op(std::uint32_t, std::uint64_t, std::uint64_t, bool& changed) override {
        changed = false;
        return answer;
    }
    bool block_allowed(std::uint64_t gpa, std::uint64_t size) const override {
        return !allowed_end || (gpa <= *allowed_end && size <= *allowed_end - gpa);
    }
    std::uint32_t verify(std::span<const hv_stamp> s, std::uint64_t guest_lost, std::uint64_t& lost,
                         std::uint64_t& checked) override {
        ++verifies;
        stamps.assign(s.begin(), s.end());
        guest_lost_seen = guest_lost;
        lost = guest_lost + lost_answer;
        checked = s.size();
        return answer;
    }
};

constexpr std::uint64_t kRam = 1 << 20;
constexpr std::uint64_t kBlock = 0x2000;
constexpr std::uint64_t kTable = 0x10000;

hv_call_verify verify_block(std::uint64_t table, std::uint64_t count, std::uint64_t guest_lost = 0) {
    hv_call_verify b{};
    b.hdr.nr = HV_CALL_VERIFY;
    b.hdr.size = sizeof b;
    b.table = table;
    b.count = count;
    b.guest_lost = guest_lost;
    b.lost = 0xaaaa;
    b.checked = 0xbbbb;
    return b;
}

std::vector<hv_stamp> some_stamps(std::size_t n) {
    std::vector<hv_stamp> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = {ga(i % kRegionPages, 8 * i), 0x1000 + i, i};
    return v;
}

void put_table(GuestMemory& mem, std::uint64_t gpa, const std::vector<hv_stamp>& stamps) {
    REQUIRE(mem.write(gpa, std::span(reinterpret_cast<const std::uint8_t*>(stamps.data()), stamps.size() * sizeof(hv_stamp))));
}

hv_call_page_fault pf_block(std::uint64_t address, std::uint32_t error_code) {
    hv_call_page_fault b{};
    b.hdr.nr = HV_CALL_PAGE_FAULT;
    b.hdr.size = sizeof b;
    b.address = address;
    b.error_code = error_code;
    b.rip = 0x201234;
    b.rsp = 0x3fff0;
    b.rflags = 0x10246;
    for (int i = 0; i < HV_NGPRS; ++i) b.gprs[i] = 0x5000 + static_cast<std::uint64_t>(i) * 0x11;
    return b;
}

} // namespace

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
    CHECK(rig.reports.empty());
    CHECK(rig.quiesces == 1);
}

TEST_CASE("MmuPager::verify: a wrong value is lost and reported with the address and both values") {
    VerifyRig rig;
    rig.write(ga(2, 16), 0x1234);
    const auto r = rig.verify({{ga(2, 16), 0x5678, 0}, {ga(2, 24), 0, 0}});
    CHECK(r.status == HV_OK);
    CHECK(r.lost == 1);
    CHECK(r.checked == 2);
    REQUIRE(rig.reports.size() == 1);
    CAPTURE(rig.reports[0]);
    CHECK(contains(rig.reports[0], "lost write"));
    CHECK(contains(rig.reports[0], hv::hex(ga(2, 16))));
    CHECK(contains(rig.reports[0], "expected " + hv::hex(0x5678)));
    CHECK(contains(rig.reports[0], "found " + hv::hex(0x1234)));
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
    REQUIRE(rig.reports.size() == 1);
    CHECK(contains(rig.reports[0], "found " + hv::hex(0x77)));
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
    CHECK(rig.unmaps_asked == std::vector<std::uint64_t>{4});
    // unmap_done = 3: every unmap that began had finished before the write.
    r = rig.verify({{ga(4, 32), 0xabc, 3}});
    CHECK(r.lost == 1);
    REQUIRE(rig.reports.size() == 1);
    CHECK(contains(rig.reports[0], "found " + hv::hex(0)));
    // A wrong non-zero value is lost whatever the unmap counters say.
    rig.write(ga(4, 32), 0xdef);
    r = rig.verify({{ga(4, 32), 0xabc, 0}});
    CHECK(r.lost == 1);
}

TEST_CASE("MmuPager::verify: without an unmaps_started hook a value read back as 0 is lost") {
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
    CHECK(rig.reports.empty());
    r = rig.verify({{ga(0), 2, 0}}, 5);
    CHECK(r.lost == 6);
    CHECK(rig.reports.size() == 1);
    r = rig.verify({}, HV_VERIFY_MAX);
    CHECK(r.status == HV_OK);
    CHECK(r.lost == HV_VERIFY_MAX);
    CHECK(r.checked == 0);
}

TEST_CASE("MmuPager::verify: at most 10 report lines, every loss counted") {
    VerifyRig rig;
    std::vector<hv_stamp> stamps;
    for (std::uint64_t i = 0; i < 15; ++i) {
        rig.write(ga(0, 8 * i), 100 + i);
        stamps.push_back({ga(0, 8 * i), 200 + i, 0});
    }
    const auto r = rig.verify(stamps, 3);
    CHECK(r.lost == 18);
    CHECK(r.checked == 15);
    CHECK(rig.reports.size() == 10);
}

TEST_CASE("MmuPager::verify: an address inside the region but outside every memslot is lost") {
    VerifyRig rig;
    const auto r = rig.verify({{ga(kSlotPages), 0, 0}, {ga(kRegionPages - 1, kPage - 8), 5, 0}});
    CHECK(r.status == HV_OK);
    CHECK(r.checked == 2);
    CHECK(r.lost == 2);
    REQUIRE(rig.reports.size() == 2);
    CHECK(contains(rig.reports[0], "outside every memslot"));
}

TEST_CASE("MmuPager::verify: a stamp outside the region or misaligned is HV_E_BAD_ARG before quiesce") {
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
    CHECK(rig.quiesces == 0);
    CHECK(rig.reports.empty());
    CHECK(rig.unmaps_asked.empty());
    // The last word of the region is fine.
    CHECK(rig.verify({{ga(kRegionPages - 1, kPage - 8), 0, 0}}).status == HV_OK);
    CHECK(rig.quiesces == 1);
}

TEST_CASE("MmuPager::verify: quiesce runs once per good call, even for an empty table") {
    VerifyRig rig;
    CHECK(rig.verify({}).status == HV_OK);
    CHECK(rig.quiesces == 1);
    rig.write(ga(1), 3);
    CHECK(rig.verify({{ga(1), 3, 0}, {ga(2), 0, 0}}).status == HV_OK);
    CHECK(rig.quiesces == 2);
}

// ---------------------------------------------------------------------------
// HV_CALL_VERIFY through handle_hypercall

TEST_CASE("HV_CALL_VERIFY: ABI sizes") {
    CHECK(sizeof(hv_stamp) == 24);
    CHECK(sizeof(hv_call_verify) == 48);
}

TEST_CASE("HV_CALL_VERIFY: the table reaches the pager and lost/checked are written back") {
    GuestMemory mem(kRam);
    FakePager pager;
    pager.lost_answer = 2;
    const auto stamps = some_stamps(5);
    put_table(mem, kTable, stamps);
    REQUIRE(mem.write_obj(kBlock, verify_block(kTable, 5, 7)));
    const auto r = handle_hypercall(mem, kBlock, {0, &pager});
    CHECK(r.status == HV_OK);
    CHECK(r.fatal.empty());
    CHECK_FALSE(r.exception.has_value());
    REQUIRE(pager.verifies == 1);
    CHECK(pager.guest_lost_seen == 7);
    REQUIRE(pager.stamps.size() == 5);
    for (std::size_t i = 0; i < 5; ++i) {
        CHECK(pager.stamps[i].address == stamps[i].address);
        CHECK(pager.stamps[i].value == stamps[i].value);
        CHECK(pager.stamps[i].unmap_done == stamps[i].unmap_done);
    }
    const auto after = mem.read_obj<hv_call_verify>(kBlock);
    REQUIRE(after);
    CHECK(after->lost == 9);
    CHECK(after->checked == 5);
    CHECK(after->table == kTable);
    CHECK(after->count == 5);
    CHECK(after->guest_lost == 7);
    CHECK(after->hdr.nr == HV_CALL_VERIFY);
    CHECK(after->hdr.size == sizeof(hv_call_verify));
}

TEST_CASE("HV_CALL_VERIFY: the pager's status is returned, with the block written back") {
    GuestMemory mem(kRam);
    FakePager pager;
    pager.answer = HV_E_BAD_ARG;
    put_table(mem, kTable, some_stamps(1));
    REQUIRE(mem.write_obj(kBlock, verify_block(kTable, 1)));
    CHECK(handle_hypercall(mem, kBlock, {0, &pager}).status == HV_E_BAD_ARG);
    CHECK(mem.read_obj<hv_call_verify>(kBlock)->checked == 1);
}

TEST_CASE("HV_CALL_VERIFY: over-large count or guest_lost is HV_E_BAD_ARG") {
    GuestMemory mem(kRam);
    FakePager pager;
    auto status = [&](const hv_call_verify& b) {
        REQUIRE(mem.write_obj(kBlock, b));
        return handle_hypercall(mem, kBlock, {0, &pager}).status;
    };
    CHECK(status(verify_block(kTable, HV_VERIFY_MAX + 1)) == HV_E_BAD_ARG);
    CHECK(status(verify_block(kTable, ~0ull)) == HV_E_BAD_ARG);
    CHECK(status(verify_block(kTable, 1, HV_VERIFY_MAX + 1)) == HV_E_BAD_ARG);
    CHECK(status(verify_block(kTable, 1, ~0ull)) == HV_E_BAD_ARG);
    // The limits themselves pass the argument check (the table of
    // HV_VERIFY_MAX stamps then does not fit in 1 MiB of RAM).
    CHECK(status(verify_block(kTable, HV_VERIFY_MAX)) == HV_E_FAULT);
    put_table(mem, kTable, some_stamps(1));
    CHECK(status(verify_block(kTable, 1, HV_VERIFY_MAX)) == HV_OK);
    CHECK(pager.verifies == 1);
    CHECK(mem.read_obj<hv_call_verify>(kBlock)->lost == HV_VERIFY_MAX);
}

TEST_CASE("HV_CALL_VERIFY: a table outside RAM is HV_E_FAULT and nothing is written back") {
    GuestMemory mem(kRam);
    FakePager pager;
    for (std::uint64_t table : std::vector<std::uint64_t>{kRam, kRam - sizeof(hv_stamp), kRam - 2 * sizeof(hv_stamp) + 8,
                                                           ~0ull - 7, 1ull << 40}) {
        CAPTURE(table);
        const hv_call_verify b = verify_block(table, 2);
        REQUIRE(mem.write_obj(kBlock, b));
        CHECK(handle_hypercall(mem, kBlock, {0, &pager}).status == HV_E_FAULT);
        const auto after = mem.read_obj<hv_call_verify>(kBlock);
        CHECK(after->lost == 0xaaaa);
        CHECK(after->checked == 0xbbbb);
    }
    CHECK(pager.verifies == 0);
    // A table that ends exactly at the end of RAM is fine.
    put_table(mem, kRam - 2 * sizeof(hv_stamp), some_stamps(2));
    REQUIRE(mem.write_obj(kBlock, verify_block(kRam - 2 * sizeof(hv_stamp), 2)));
    CHECK(handle_hypercall(mem, kBlock, {0, &pager}).status == HV_OK);
    CHECK(pager.verifies == 1);
}

TEST_CASE("HV_CALL_VERIFY: a table or block the pager does not allow is HV_E_FAULT") {
    GuestMemory mem(kRam);
    FakePager pager;
    pager.allowed_end = 0x20000;
    put_table(mem, 0x30000, some_stamps(2));
    REQUIRE(mem.write_obj(kBlock, verify_block(0x30000, 2)));
    CHECK(handle_hypercall(mem, kBlock, {0, &pager}).status == HV_E_FAULT);
    // A table that straddles the allowed end.
    put_table(mem, 0x20000 - sizeof(hv_stamp), some_stamps(2));
    REQUIRE(mem.write_obj(kBlock, verify_block(0x20000 - sizeof(hv_stamp), 2)));
    CHECK(handle_hypercall(mem, kBlock, {0, &pager}).status == HV_E_FAULT);
    // The block itself outside what the pager allows.
    put_table(mem, kTable, some_stamps(2));
    REQUIRE(mem.write_obj(0x40000, verify_block(kTable, 2)));
    CHECK(handle_hypercall(mem, 0x40000, {0, &pager}).status == HV_E_FAULT);
    CHECK(mem.read_obj<hv_call_verify>(0x40000)->checked == 0xbbbb);
    CHECK(pager.verifies == 0);
    REQUIRE(mem.write_obj(kBlock, verify_block(kTable, 2)));
    CHECK(handle_hypercall(mem, kBlock, {0, &pager}).status == HV_OK);
    CHECK(pager.verifies == 1);
}

TEST_CASE("HV_CALL_VERIFY: identity mode answers HV_E_NOT_SHADOW") {
    GuestMemory mem(kRam);
    put_table(mem, kTable, some_stamps(3));
    REQUIRE(mem.write_obj(kBlock, verify_block(kTable, 3)));
    CHECK(handle_hypercall(mem, kBlock, {}).status == HV_E_NOT_SHADOW);
    CHECK(mem.read_obj<hv_call_verify>(kBlock)->checked == 0xbbbb);
}

TEST_CASE("HV_CALL_VERIFY: a size other than sizeof(hv_call_verify) is HV_E_BAD_SIZE") {
    GuestMemory mem(kRam);
    FakePager pager;
    put_table(mem, kTable, some_stamps(1));
    for (std::uint32_t size : {0u, 8u, static_cast<std::uint32_t>(sizeof(hv_call_verify) - 8),
                               static_cast<std::uint32_t>(sizeof(hv_call_verify) + 8)}) {
        CAPTURE(size);
        hv_call_verify b = verify_block(kTable, 1);
        b.hdr.size = size;
        REQUIRE(mem.write_obj(kBlock, b));
        CHECK(handle_hypercall(mem, kBlock, {0, &pager}).status == HV_E_BAD_SIZE);
    }
    CHECK(pager.verifies == 0);
    // A block running past the end of RAM.
    hv_call_header hdr{HV_CALL_VERIFY, sizeof(hv_call_verify)};
    REQUIRE(mem.write_obj(kRam - sizeof hdr, hdr));
    CHECK(handle_hypercall(mem, kRam - sizeof hdr, {0, &pager}).status == HV_E_FAULT);
    CHECK(pager.verifies == 0);
}

TEST_CASE("HV_CALL_VERIFY: MmuPager end to end through the hypercall") {
    GuestMemory mem(kRam);
    VerifyRig rig;
    rig.write(ga(0), 11);
    rig.write(ga(1), 12);
    const std::vector<hv_stamp> stamps{{ga(0), 11, 0}, {ga(1), 13, 0}, {ga(9), 0, 0}};
    put_table(mem, kTable, stamps);
    REQUIRE(mem.write_obj(kBlock, verify_block(kTable, 3, 4)));
    CHECK(handle_hypercall(mem, kBlock, {0, &rig.pager}).status == HV_OK);
    const auto after = mem.read_obj<hv_call_verify>(kBlock);
    CHECK(after->checked == 3);
    CHECK(after->lost == 5);
    CHECK(rig.quiesces == 1);
    // A bad stamp: HV_E_BAD_ARG, nothing checked, no quiesce.
    const std::vector<hv_stamp> bad{{ga(0), 11, 0}, {ga(0, 3), 1, 0}};
    put_table(mem, kTable, bad);
    REQUIRE(mem.write_obj(kBlock, verify_block(kTable, 2)));
    CHECK(handle_hypercall(mem, kBlock, {0, &rig.pager}).status == HV_E_BAD_ARG);
    CHECK(mem.read_obj<hv_call_verify>(kBlock)->checked == 0);
    CHECK(rig.quiesces == 1);
}

// ---------------------------------------------------------------------------
// HV_CALL_PAGE_FAULT with --strict-faults

TEST_CASE("HV_CALL_PAGE_FAULT: --strict-faults turns an unresolved fault into a fatal report") {
    GuestMemory mem(kRam);
    FakePager pager;
    pager.answer = HV_E_NO_MEMSLOT;
    const std::uint64_t address = 0x7000123450;
    const hv_call_page_fault b = pf_block(address, 0x6);
    REQUIRE(mem.write_obj(kBlock, b));
    const hv::HypercallResult r = handle_hypercall(mem, kBlock, {3, &pager, true});
    CHECK(r.status == HV_E_NO_MEMSLOT);
    CAPTURE(r.fatal);
    CHECK(contains(r.fatal, "--strict-faults"));
    CHECK(contains(r.fatal, hv::hex(address)));
    CHECK(contains(r.fatal, hv::hex(b.rip)));
    CHECK(contains(r.fatal, "outside every memslot"));
    REQUIRE(r.exception.has_value());
    const hv_call_exception& e = *r.exception;
    CHECK(e.vector == 14);
    CHECK(e.error_code == 0x6);
    CHECK(e.rip == b.rip);
    CHECK(e.rsp == b.rsp);
    CHECK(e.rflags == b.rflags);
    CHECK(e.cr2 == address);
    CHECK(e.cs == HV_GDT_CODE64);
    CHECK(e.ss == HV_GDT_DATA);
    CHECK(std::memcmp(e.gprs, b.gprs, sizeof e.gprs) == 0);
    CHECK(pager.fault_vcpus == std::vector<std::uint32_t>{3});
    CHECK(pager.fault_addresses == std::vector<std::uint64_t>{address});
}

TEST_CASE("HV_CALL_PAGE_FAULT: without --strict-faults an unresolved fault is only a status") {
    GuestMemory mem(kRam);
    FakePager pager;
    for (std::uint32_t answer : {HV_E_NO_MEMSLOT, HV_E_REFUSED, HV_E_NO_MEMORY}) {
        CAPTURE(answer);
        pager.answer = answer;
        REQUIRE(mem.write_obj(kBlock, pf_block(kRegion, 0x2)));
        const hv::HypercallResult r = handle_hypercall(mem, kBlock, {0, &pager, false});
        CHECK(r.status == answer);
        CHECK(r.fatal.empty());
        CHECK_FALSE(r.exception.has_value());
    }
    // With --strict-faults, a resolved fault is not fatal either.
    pager.answer = HV_OK;
    const hv::HypercallResult ok = handle_hypercall(mem, kBlock, {0, &pager, true});
    CHECK(ok.status == HV_OK);
    CHECK(ok.fatal.empty());
    CHECK_FALSE(ok.exception.has_value());
    // Every unresolved status is fatal under --strict-faults, each with its reason.
    pager.answer = HV_E_REFUSED;
    CHECK(contains(handle_hypercall(mem, kBlock, {0, &pager, true}).fatal, "refuses"));
    pager.answer = HV_E_NO_MEMORY;
    CHECK(contains(handle_hypercall(mem, kBlock, {0, &pager, true}).fatal, "no frame"));
}

TEST_CASE("dispatch_exit: a fatal page-fault hypercall stops the VM with a crash report and the guest frame") {
    namespace xd = hv::test::exit_dispatch;
    xd::Machine m;
    FakePager pager;
    pager.answer = HV_E_NO_MEMSLOT;
    m.ctx.pager = &pager;
    m.ctx.strict_faults = true;
    const std::uint64_t address = kRegion + 0x5008;
    REQUIRE(m.memory.write_obj(0x8000, pf_block(address, 0x4)));
    std::vector<std::uint8_t> bytes(4);
    const std::uint32_t gpa = 0x8000;
    std::memcpy(bytes.data(), &gpa, 4);
    hv::ExitRecord rec = xd::io(true, HV_HYPERCALL_PORT, bytes, 4);
    rec.vcpu = 2;
    const hv::ExitAction a = m.dispatch(rec);
    xd::check_crash(m, a, "--strict-faults");
    CHECK(contains(m.stop.state().message, hv::hex(address)));
    REQUIRE(a.guest_frame.has_value());
    CHECK(a.guest_frame->vector == 14);
    CHECK(a.guest_frame->cr2 == address);
    CHECK(a.guest_frame->rip == 0x201234);
    CHECK(a.guest_frame->gprs[HV_RAX] == 0x5000);
    CHECK(pager.fault_vcpus == std::vector<std::uint32_t>{2});
}

TEST_CASE("dispatch_exit: without --strict-faults an unresolved fault resumes with the status in RAX") {
    namespace xd = hv::test::exit_dispatch;
    xd::Machine m;
    FakePager pager;
    pager.answer = HV_E_NO_MEMSLOT;
    m.ctx.pager = &pager;
    REQUIRE(m.memory.write_obj(0x8000, pf_block(kRegion, 0x4)));
    std::vector<std::uint8_t> bytes(4);
    const std::uint32_t gpa = 0x8000;
    std::memcpy(bytes.data(), &gpa, 4);
    const hv::ExitAction a = m.dispatch(xd::io(true, HV_HYPERCALL_PORT, bytes, 4));
    CHECK(a.kind == hv::ExitAction::Kind::Resume);
    CHECK_FALSE(a.crash_report);
    CHECK(a.set_rax == std::optional<std::uint64_t>{HV_E_NO_MEMSLOT});
    CHECK_FALSE(m.stop.stopped());
}
