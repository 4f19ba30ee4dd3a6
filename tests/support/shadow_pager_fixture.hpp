#pragma once
// Shared by test_shadow_verify.cpp and test_shadow_hypercalls.cpp: a small
// MMU with one memslot behind an MmuPager (VerifyRig), a pager that records
// what the hypercall layer hands it (FakePager), and request blocks.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "hv/abi.h"
#include "mmu/base/units.hpp"
#include "tests/support/text_match.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/shadow/mmu_pager.hpp"
#include "vmm/shadow/shadow_pager.hpp"

namespace shadow_fixture {

namespace mmu = hv::mmu;
using hv::GuestMemory;
using hv::mmu::kPage;
constexpr std::uint64_t kHost = 0x7f0000000000;
constexpr std::uint64_t kRegion = HV_SHADOW_REGION_BASE;
constexpr std::uint64_t kRegionPages = 16;
constexpr std::uint64_t kSlotPages = 12; // the memslot covers only the first 12 pages of the region

using hv::test::contains;

// A region of 16 pages at kRegion; the memslot maps its first 12 onto an
// anonymous host mapping at kHost. Records the lines the pager prints.
struct VerifyRig {
    mmu::FrameSpace frames{128};
    mmu::HostAddressSpace host{frames};
    mmu::ShadowMmu shadow{host, {mmu::LockPolicy::Rw, mmu::CoherencePolicy::Seq, 512, 1}};
    std::vector<std::string> reports;          // every line the pager printed
    std::uint64_t unmaps[kRegionPages] = {};    // unmap_started[page] as the VMM counts it
    std::uint64_t unmaps_done[kRegionPages] = {};
    hv::MmuPager pager;

    explicit VerifyRig(bool with_unmap_counters = true) : pager(shadow, host, setup(with_unmap_counters)) {
        host.map_anonymous({kHost, kHost + kSlotPages * kPage}, true);
        shadow.add_memslot({1, kRegion, kSlotPages * kPage, kHost, true});
    }
    hv::MmuPager::Setup setup(bool with_unmap_counters) {
        hv::MmuPager::Setup s;
        s.region = {kRegion, kRegion + kRegionPages * kPage};
        if (with_unmap_counters) s.unmaps = hv::UnmapCounters(unmaps, unmaps_done);
        s.log = [this](std::string_view line) { reports.emplace_back(line); };
        return s;
    }
    // The reports that start with `prefix` ("lost write: ", "coherence check: ").
    std::vector<std::string> lines(const std::string& prefix) const {
        std::vector<std::string> out;
        for (const std::string& l : reports)
            if (l.starts_with(prefix)) out.push_back(l);
        return out;
    }
    std::vector<std::string> lost_writes() const { return lines("lost write: "); }
    std::size_t checks() const { return lines("coherence check: ").size(); } // verify calls that compared
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

inline std::uint64_t ga(std::uint64_t page, std::uint64_t offset = 0) { return kRegion + page * kPage + offset; }

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

inline hv_call_verify verify_block(std::uint64_t table, std::uint64_t count, std::uint64_t guest_lost = 0) {
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

inline std::vector<hv_stamp> some_stamps(std::size_t n) {
    std::vector<hv_stamp> v(n);
    for (std::size_t i = 0; i < n; ++i) v[i] = {ga(i % kRegionPages, 8 * i), 0x1000 + i, i};
    return v;
}

inline void put_table(GuestMemory& mem, std::uint64_t gpa, const std::vector<hv_stamp>& stamps) {
    REQUIRE(mem.write(gpa, std::span(reinterpret_cast<const std::uint8_t*>(stamps.data()), stamps.size() * sizeof(hv_stamp))));
}

inline hv_call_page_fault pf_block(std::uint64_t address, std::uint32_t error_code) {
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

} // namespace shadow_fixture
