// The shadow-paging hypercalls between the guest and a ShadowPager:
// HV_CALL_VERIFY's argument checks and write-back (with a recording pager and
// end to end with MmuPager), and --strict-faults, where a page fault the
// pager cannot resolve becomes a crash report with the guest's context.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "hv/abi.h"
#include "tests/support/exit_dispatch_fixture.hpp"
#include "tests/support/shadow_pager_fixture.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/run/exit_dispatch.hpp"
#include "vmm/run/hypercall.hpp"
#include "vmm/shadow/shadow_pager.hpp"

using hv::handle_hypercall;
using hv::HypercallContext;
using namespace shadow_fixture;

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
    CHECK(rig.checks() == 1);
    // A bad stamp: HV_E_BAD_ARG, nothing checked, nothing compared.
    const std::vector<hv_stamp> bad{{ga(0), 11, 0}, {ga(0, 3), 1, 0}};
    put_table(mem, kTable, bad);
    REQUIRE(mem.write_obj(kBlock, verify_block(kTable, 2)));
    CHECK(handle_hypercall(mem, kBlock, {0, &rig.pager}).status == HV_E_BAD_ARG);
    CHECK(mem.read_obj<hv_call_verify>(kBlock)->checked == 0);
    CHECK(rig.checks() == 1);
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
