// hv::handle_hypercall called directly on GuestMemory, and the exception
// naming helpers. The request block comes from the guest, so every
// placement of it relative to the end of RAM must be handled.
#include <doctest/doctest.h>

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "hv/abi.h"
#include "tests/support/text_match.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/run/hypercall.hpp"

using hv::GuestMemory;
using hv::handle_hypercall;

namespace {

constexpr std::uint64_t kRam = 1 << 20;

using hv::test::contains;

hv_call_echo echo_block(std::uint64_t in) {
    hv_call_echo e{};
    e.hdr.nr = HV_CALL_ECHO;
    e.hdr.size = sizeof e;
    e.in = in;
    e.out = 0xcccccccccccccccc;
    return e;
}

std::vector<std::uint8_t> snapshot(const GuestMemory& mem, std::uint64_t gpa, std::size_t len) {
    std::vector<std::uint8_t> out(len);
    if (!mem.read(gpa, out)) FAIL("snapshot outside RAM");
    return out;
}

} // namespace

TEST_CASE("ABI struct sizes the guest and the VMM must agree on") {
    // hdr (8) + in (8) + out (8).
    CHECK(sizeof(hv_call_echo) == 24);
    // hdr (8) + 8 u64 fields (64) + 15 GPRs (120) + flags/reserved (8).
    CHECK(sizeof(hv_call_exception) == 200);
    CHECK(offsetof(hv_call_exception, gprs) == 72);
}

TEST_CASE("handle_hypercall: ECHO writes in + 1 to out and keeps the rest") {
    GuestMemory mem(kRam);
    REQUIRE(mem.write_obj(0x4000, echo_block(0x1234)));
    const hv::HypercallResult r = handle_hypercall(mem, 0x4000);
    CHECK(r.status == HV_OK);
    CHECK_FALSE(r.exception.has_value());
    const auto after = mem.read_obj<hv_call_echo>(0x4000);
    REQUIRE(after);
    CHECK(after->out == 0x1235);
    CHECK(after->in == 0x1234);
    CHECK(after->hdr.nr == HV_CALL_ECHO);
    CHECK(after->hdr.size == sizeof(hv_call_echo));
}

TEST_CASE("handle_hypercall: ECHO of UINT64_MAX wraps to 0") {
    GuestMemory mem(kRam);
    REQUIRE(mem.write_obj(0x4000, echo_block(UINT64_MAX)));
    CHECK(handle_hypercall(mem, 0x4000).status == HV_OK);
    CHECK(mem.read_obj<hv_call_echo>(0x4000)->out == 0);
}

TEST_CASE("handle_hypercall: unaligned block and a block ending exactly at the end of RAM") {
    GuestMemory mem(kRam);
    REQUIRE(mem.write_obj(0x4003, echo_block(9)));
    CHECK(handle_hypercall(mem, 0x4003).status == HV_OK);
    CHECK(mem.read_obj<hv_call_echo>(0x4003)->out == 10);

    const std::uint64_t last = kRam - sizeof(hv_call_echo);
    REQUIRE(mem.write_obj(last, echo_block(100)));
    CHECK(handle_hypercall(mem, last).status == HV_OK);
    CHECK(mem.read_obj<hv_call_echo>(last)->out == 101);
}

TEST_CASE("handle_hypercall: a block straddling the end of RAM faults and writes nothing") {
    GuestMemory mem(kRam);
    // The 8-byte header is inside RAM, the in/out fields are not.
    const std::uint64_t gpa = kRam - 8;
    hv_call_header h{HV_CALL_ECHO, sizeof(hv_call_echo)};
    REQUIRE(mem.write_obj(gpa, h));
    const auto before = snapshot(mem, kRam - 64, 64);
    const hv::HypercallResult r = handle_hypercall(mem, gpa);
    CHECK(r.status == HV_E_FAULT);
    CHECK_FALSE(r.exception.has_value());
    CHECK(snapshot(mem, kRam - 64, 64) == before);

    // Only part of the header inside RAM.
    CHECK(handle_hypercall(mem, kRam - 4).status == HV_E_FAULT);
    // Entirely outside, and at addresses where gpa + size overflows.
    CHECK(handle_hypercall(mem, kRam).status == HV_E_FAULT);
    CHECK(handle_hypercall(mem, 0xffffffff).status == HV_E_FAULT);
    CHECK(handle_hypercall(mem, UINT64_MAX - 3).status == HV_E_FAULT);
    CHECK(handle_hypercall(mem, UINT64_MAX).status == HV_E_FAULT);
}

TEST_CASE("handle_hypercall: an exception report straddling the end of RAM faults") {
    GuestMemory mem(kRam);
    const std::uint64_t gpa = kRam - 100; // header fits, the 200-byte block does not
    hv_call_header h{HV_CALL_EXCEPTION, sizeof(hv_call_exception)};
    REQUIRE(mem.write_obj(gpa, h));
    const hv::HypercallResult r = handle_hypercall(mem, gpa);
    CHECK(r.status == HV_E_FAULT);
    CHECK_FALSE(r.exception.has_value());
}

TEST_CASE("handle_hypercall: unknown call numbers") {
    GuestMemory mem(kRam);
    for (std::uint32_t nr : {static_cast<std::uint32_t>(HV_CALL_NCALLS), 100u, 0x80000000u, 0xffffffffu}) {
        CAPTURE(nr);
        hv_call_header h{nr, 8};
        REQUIRE(mem.write_obj(0x4000, h));
        const hv::HypercallResult r = handle_hypercall(mem, 0x4000);
        CHECK(r.status == HV_E_UNKNOWN_CALL);
        CHECK_FALSE(r.exception.has_value());
    }
}

TEST_CASE("handle_hypercall: wrong header size for each call") {
    GuestMemory mem(kRam);
    for (std::uint32_t size : {0u, 8u, 23u, 25u, 200u, 0xffffffffu}) {
        CAPTURE(size);
        hv_call_echo e = echo_block(5);
        e.hdr.size = size;
        REQUIRE(mem.write_obj(0x4000, e));
        CHECK(handle_hypercall(mem, 0x4000).status == HV_E_BAD_SIZE);
        CHECK(mem.read_obj<hv_call_echo>(0x4000)->out == 0xcccccccccccccccc);
    }
    for (std::uint32_t size : {0u, 24u, 199u, 201u}) {
        CAPTURE(size);
        hv_call_header h{HV_CALL_EXCEPTION, size};
        REQUIRE(mem.write_obj(0x4000, h));
        const hv::HypercallResult r = handle_hypercall(mem, 0x4000);
        CHECK(r.status == HV_E_BAD_SIZE);
        CHECK_FALSE(r.exception.has_value());
    }
}

TEST_CASE("handle_hypercall: YIELD is a bare header, in identity mode too, and writes nothing") {
    GuestMemory mem(kRam);
    struct {
        hv_call_yield call;
        std::uint64_t after;
    } block{{{HV_CALL_YIELD, sizeof(hv_call_yield)}}, 0x5555555555555555};
    static_assert(sizeof(hv_call_yield) == 8);
    REQUIRE(mem.write_obj(0x4000, block));
    const hv::HypercallResult r = handle_hypercall(mem, 0x4000);
    CHECK(r.status == HV_OK);
    CHECK_FALSE(r.exception.has_value());
    CHECK(snapshot(mem, 0x4000, sizeof block) == [&] {
        std::vector<std::uint8_t> bytes(sizeof block);
        std::memcpy(bytes.data(), &block, sizeof block);
        return bytes;
    }());
    for (std::uint32_t size : {0u, 7u, 9u, 16u}) {
        CAPTURE(size);
        hv_call_header h{HV_CALL_YIELD, size};
        REQUIRE(mem.write_obj(0x4000, h));
        CHECK(handle_hypercall(mem, 0x4000).status == HV_E_BAD_SIZE);
    }
    // A block at the very end of RAM fits; one byte further does not.
    REQUIRE(mem.write_obj(kRam - 8, hv_call_header{HV_CALL_YIELD, 8}));
    CHECK(handle_hypercall(mem, kRam - 8).status == HV_OK);
    CHECK(handle_hypercall(mem, kRam - 7).status == HV_E_FAULT);
}

TEST_CASE("handle_hypercall: EXCEPTION returns the guest's report unchanged") {
    GuestMemory mem(kRam);
    hv_call_exception e{};
    e.hdr = {HV_CALL_EXCEPTION, sizeof e};
    e.vector = 14;
    e.error_code = 0x2; // write to a non-present page
    e.rip = 0x100abc;
    e.cs = HV_GDT_CODE64;
    e.rflags = 0x10202;
    e.rsp = 0x7fff0;
    e.ss = HV_GDT_DATA;
    e.cr2 = 0xdeadbeef000;
    for (int i = 0; i < HV_NGPRS; ++i) e.gprs[i] = 0xa0a0a0a000000000ull + static_cast<std::uint64_t>(i);
    e.flags = HV_EXC_RECOVERABLE;
    REQUIRE(mem.write_obj(0x6000, e));
    const auto before = snapshot(mem, 0x6000, sizeof e);

    const hv::HypercallResult r = handle_hypercall(mem, 0x6000);
    CHECK(r.status == HV_OK);
    REQUIRE(r.exception.has_value());
    CHECK(std::memcmp(&*r.exception, &e, sizeof e) == 0);
    CHECK(r.exception->gprs[HV_RDI] == 0xa0a0a0a000000000ull + HV_RDI);
    CHECK(snapshot(mem, 0x6000, sizeof e) == before); // nothing written back
}

TEST_CASE("exception_mnemonic: the SDM's vector names (Vol. 3A, Table 6-1)") {
    CHECK(std::string(hv::exception_mnemonic(0)) == "#DE");
    CHECK(std::string(hv::exception_mnemonic(1)) == "#DB");
    CHECK(std::string(hv::exception_mnemonic(2)) == "NMI");
    CHECK(std::string(hv::exception_mnemonic(3)) == "#BP");
    CHECK(std::string(hv::exception_mnemonic(6)) == "#UD");
    CHECK(std::string(hv::exception_mnemonic(7)) == "#NM");
    CHECK(std::string(hv::exception_mnemonic(8)) == "#DF");
    CHECK(std::string(hv::exception_mnemonic(10)) == "#TS");
    CHECK(std::string(hv::exception_mnemonic(11)) == "#NP");
    CHECK(std::string(hv::exception_mnemonic(12)) == "#SS");
    CHECK(std::string(hv::exception_mnemonic(13)) == "#GP");
    CHECK(std::string(hv::exception_mnemonic(14)) == "#PF");
    CHECK(std::string(hv::exception_mnemonic(16)) == "#MF");
    CHECK(std::string(hv::exception_mnemonic(17)) == "#AC");
    CHECK(std::string(hv::exception_mnemonic(18)) == "#MC");
    CHECK(std::string(hv::exception_mnemonic(19)) == "#XM");
    CHECK(std::string(hv::exception_mnemonic(20)) == "#VE");
    CHECK(std::string(hv::exception_mnemonic(21)) == "#CP");
    CHECK(std::string(hv::exception_mnemonic(32)) == "#?");
    CHECK(std::string(hv::exception_mnemonic(255)) == "#?");
    CHECK(std::string(hv::exception_mnemonic(UINT64_MAX)) == "#?");
}

TEST_CASE("describe_exception: vector, error code, RIP, and CR2 only for #PF") {
    hv_call_exception e{};
    e.vector = 13;
    e.error_code = 0x10;
    e.rip = 0x100042;
    e.cr2 = 0x5000;
    std::string s = hv::describe_exception(e);
    CHECK(contains(s, "#GP"));
    CHECK(contains(s, "vector 13"));
    CHECK(contains(s, "0x10"));
    CHECK(contains(s, "0x100042"));
    CHECK_FALSE(contains(s, "cr2"));

    e.vector = 14;
    s = hv::describe_exception(e);
    CHECK(contains(s, "#PF"));
    CHECK(contains(s, "cr2=0x5000"));

    e.vector = 1000;
    CHECK(contains(hv::describe_exception(e), "vector 1000"));
}
