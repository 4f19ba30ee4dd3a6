// The shadow-paging hypercalls (HV_CALL_PAGE_FAULT, HV_CALL_HOST_OP): every
// argument a guest can pass is checked before anything acts on it, and
// MmuPager turns the valid ones into MMU faults and host operations.
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "hv/abi.h"
#include "mmu/base/units.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/run/hypercall.hpp"
#include "vmm/shadow/mmu_pager.hpp"
#include "vmm/shadow/shadow_pager.hpp"

using hv::GuestMemory;
using hv::handle_hypercall;
using hv::HypercallContext;
namespace mmu = hv::mmu;

namespace {

constexpr std::uint64_t kRam = 1 << 20;
constexpr std::uint64_t kBlock = 0x2000;
using hv::mmu::kPage;
constexpr std::uint64_t kHost = 0x7f0000000000;
constexpr std::uint64_t kWorkload = 0x10000000000;

struct Recorder final : hv::ShadowPager {
    struct Call {
        std::uint32_t vcpu, error_code, op;
        std::uint64_t address, address2;
    };
    std::vector<Call> calls;
    std::uint32_t answer = HV_OK;
    std::uint32_t page_fault(std::uint32_t vcpu, std::uint64_t address, std::uint32_t error_code) override {
        calls.push_back({vcpu, error_code, ~0u, address, 0});
        return answer;
    }
    std::uint32_t host_op(std::uint32_t op, std::uint64_t address, std::uint64_t address2, bool& changed) override {
        calls.push_back({~0u, 0, op, address, address2});
        changed = true;
        return answer;
    }
    std::uint32_t verify(std::span<const hv_stamp> stamps, std::uint64_t guest_lost, std::uint64_t& lost,
                         std::uint64_t& checked) override {
        verified += stamps.size();
        lost = guest_lost;
        checked = stamps.size();
        return answer;
    }
    std::uint64_t verified = 0;
};

hv_call_page_fault pf_block(std::uint64_t address, std::uint32_t error_code) {
    hv_call_page_fault b{};
    b.hdr.nr = HV_CALL_PAGE_FAULT;
    b.hdr.size = sizeof b;
    b.address = address;
    b.error_code = error_code;
    return b;
}

hv_call_host_op op_block(std::uint32_t op, std::uint64_t address, std::uint64_t address2 = 0) {
    hv_call_host_op b{};
    b.hdr.nr = HV_CALL_HOST_OP;
    b.hdr.size = sizeof b;
    b.op = op;
    b.address = address;
    b.address2 = address2;
    return b;
}

template <class Block>
std::uint32_t call(GuestMemory& mem, const Block& b, const HypercallContext& ctx, std::uint64_t gpa = kBlock) {
    REQUIRE(mem.write_obj(gpa, b));
    return handle_hypercall(mem, gpa, ctx).status;
}

} // namespace

TEST_CASE("shadow hypercalls: ABI sizes") {
    // The guest is C, built by a different compiler invocation: the layout
    // is pinned here so a change to abi.h is a deliberate one.
    CHECK(sizeof(hv_call_page_fault) == 8 + 8 + 4 + 4 + 3 * 8 + HV_NGPRS * 8);
    CHECK(sizeof(hv_call_host_op) == 40);
    CHECK(sizeof(hv_call_verify) == 48);
    CHECK(sizeof(hv_stamp) == 24);
    CHECK(sizeof(hv_shootdown_slot) == 64);
}

TEST_CASE("shadow hypercalls: a valid page fault reaches the pager with the caller's vCPU") {
    GuestMemory mem(kRam);
    Recorder pager;
    const HypercallContext ctx{3, &pager};
    CHECK(call(mem, pf_block(kWorkload + 0x123, 0x7), ctx) == HV_OK);
    REQUIRE(pager.calls.size() == 1);
    CHECK(pager.calls[0].vcpu == 3);
    CHECK(pager.calls[0].address == kWorkload + 0x123);
    CHECK(pager.calls[0].error_code == 0x7);
    pager.answer = HV_E_REFUSED;
    CHECK(call(mem, pf_block(kWorkload, 0x2), ctx) == HV_E_REFUSED);
}

TEST_CASE("shadow hypercalls: garbage is refused before the pager sees it") {
    GuestMemory mem(kRam);
    Recorder pager;
    const HypercallContext ctx{0, &pager};
    auto reserved = pf_block(kWorkload, 0);
    reserved.reserved = 1;
    CHECK(call(mem, reserved, ctx) == HV_E_BAD_ARG);
    CHECK(call(mem, pf_block(kWorkload, 0x20), ctx) == HV_E_BAD_ARG);            // an unknown error-code bit
    CHECK(call(mem, pf_block(1ull << 47, 0), ctx) == HV_E_BAD_ARG);             // past the lower half
    CHECK(call(mem, pf_block(0xffff800000000000ull, 0), ctx) == HV_E_BAD_ARG);  // the kernel half
    auto short_block = pf_block(kWorkload, 0);
    short_block.hdr.size = 16;
    CHECK(call(mem, short_block, ctx) == HV_E_BAD_SIZE);
    CHECK(call(mem, op_block(HV_HOST_NOPS, kWorkload), ctx) == HV_E_BAD_ARG);
    CHECK(call(mem, op_block(0xffffffffu, kWorkload), ctx) == HV_E_BAD_ARG);
    CHECK(call(mem, op_block(HV_HOST_MIGRATE, kWorkload, kWorkload), ctx) == HV_E_BAD_ARG); // address2 only for merge
    CHECK(call(mem, op_block(HV_HOST_MERGE, kWorkload, ~0ull), ctx) == HV_E_BAD_ARG);
    auto op_reserved = op_block(HV_HOST_AGE, kWorkload);
    op_reserved.reserved = 9;
    CHECK(call(mem, op_reserved, ctx) == HV_E_BAD_ARG);
    // A block that runs past the end of RAM: nothing read, nothing written.
    hv_call_header hdr{HV_CALL_HOST_OP, sizeof(hv_call_host_op)};
    REQUIRE(mem.write_obj(kRam - sizeof hdr, hdr));
    CHECK(handle_hypercall(mem, kRam - sizeof hdr, ctx).status == HV_E_FAULT);
    CHECK(pager.calls.empty());
}

TEST_CASE("shadow hypercalls: identity mode answers HV_E_NOT_SHADOW") {
    GuestMemory mem(kRam);
    CHECK(call(mem, pf_block(kWorkload, 0), {}) == HV_E_NOT_SHADOW);
    CHECK(call(mem, op_block(HV_HOST_MIGRATE, kWorkload), {}) == HV_E_NOT_SHADOW);
}

TEST_CASE("shadow hypercalls: host op writes back whether the host changed something") {
    GuestMemory mem(kRam);
    Recorder pager;
    CHECK(call(mem, op_block(HV_HOST_MERGE, kWorkload, kWorkload + kPage), HypercallContext{0, &pager}) == HV_OK);
    CHECK(mem.read_obj<hv_call_host_op>(kBlock)->changed == 1);
    CHECK(pager.calls.at(0).op == HV_HOST_MERGE);
    CHECK(pager.calls.at(0).address2 == kWorkload + kPage);
}

TEST_CASE("MmuPager: faults install entries, host operations change the host and zap") {
    mmu::FrameSpace frames(256);
    mmu::HostAddressSpace host(frames);
    mmu::ShadowMmu shadow(host, {mmu::LockPolicy::Rw, mmu::CoherencePolicy::Seq, 512, 2});
    host.map_anonymous({kHost, kHost + 16 * kPage}, true);
    shadow.add_memslot({1, kWorkload, 8 * kPage, kHost, true});
    shadow.add_memslot({2, kWorkload + 8 * kPage, 8 * kPage, kHost + 8 * kPage, false});
    hv::MmuPager pager(shadow, host);

    CHECK(pager.page_fault(0, kWorkload, 0x2) == HV_OK);
    CHECK(shadow.entry(kWorkload) != 0);
    CHECK(pager.page_fault(1, kWorkload + 8 * kPage, 0x2) == HV_E_REFUSED); // write to a read-only slot
    CHECK(pager.page_fault(1, kWorkload + 8 * kPage, 0x0) == HV_OK);
    CHECK(pager.page_fault(0, kWorkload + 16 * kPage, 0x0) == HV_E_NO_MEMSLOT);
    CHECK(pager.page_fault(2, kWorkload, 0x0) == HV_E_BAD_ARG); // the MMU has 2 vCPUs

    bool changed = false;
    const auto before = host.lookup(kHost)->pfn;
    CHECK(pager.host_op(HV_HOST_MIGRATE, kWorkload + 5, 0, changed) == HV_OK);
    CHECK(changed);
    CHECK(host.lookup(kHost)->pfn != before);
    CHECK(shadow.entry(kWorkload) == 0); // zapped by the invalidation
    CHECK(pager.host_op(HV_HOST_PROTECT, kWorkload, 0, changed) == HV_OK);
    CHECK(changed);
    CHECK(pager.page_fault(0, kWorkload, 0x2) == HV_E_REFUSED);
    CHECK(pager.host_op(HV_HOST_UNPROTECT, kWorkload, 0, changed) == HV_OK);
    CHECK(pager.page_fault(0, kWorkload, 0x2) == HV_OK);
    CHECK(pager.page_fault(0, kWorkload + kPage, 0x0) == HV_OK);
    CHECK(pager.host_op(HV_HOST_MERGE, kWorkload + 2 * kPage, kWorkload + kPage, changed) == HV_OK); // 2 absent
    CHECK_FALSE(changed);
    CHECK(pager.host_op(HV_HOST_SWAP, kWorkload + kPage, 0, changed) == HV_OK);
    CHECK(changed);
    CHECK_FALSE(host.lookup(kHost + kPage));
    CHECK(pager.host_op(HV_HOST_UNMAP, kWorkload, 0, changed) == HV_OK);
    CHECK(changed);
    CHECK(pager.host_op(HV_HOST_AGE, kWorkload + 16 * kPage, 0, changed) == HV_E_NO_MEMSLOT);
    CHECK(pager.host_op(HV_HOST_MERGE, kWorkload, kWorkload + 16 * kPage, changed) == HV_E_NO_MEMSLOT);
    CHECK(shadow.audit().empty());
}

TEST_CASE("MmuPager: an exhausted frame space is HV_E_NO_MEMORY, not a crash") {
    mmu::FrameSpace frames(8);
    mmu::HostAddressSpace host(frames);
    mmu::ShadowMmu shadow(host, {});
    host.map_anonymous({kHost, kHost + 64 * kPage}, true);
    shadow.add_memslot({1, kWorkload, 64 * kPage, kHost, true});
    hv::MmuPager pager(shadow, host);
    std::uint32_t last = HV_OK;
    for (std::uint64_t i = 0; i < 64 && last == HV_OK; ++i) last = pager.page_fault(0, kWorkload + i * kPage, 0x2);
    CHECK(last == HV_E_NO_MEMORY);
    CHECK(shadow.audit().empty());
}
