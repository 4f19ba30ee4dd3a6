// hv::apply_cpuid_fixups over small hand-made CPUID tables: the hypervisor
// bit, the local APIC bits, the TSC-deadline bit, and XSAVE leaves made to agree with the feature
// bits (SDM Vol. 2A, CPUID leaves 01H, 07H and 0DH).
#include <doctest/doctest.h>

#include <cstdint>
#include <vector>

#include "vmm/kvm/cpuid_fixups.hpp"

namespace {

kvm_cpuid_entry2 leaf(std::uint32_t function, std::uint32_t index, std::uint32_t eax, std::uint32_t ebx,
                      std::uint32_t ecx, std::uint32_t edx, bool indexed) {
    kvm_cpuid_entry2 e{};
    e.function = function;
    e.index = index;
    e.flags = indexed ? KVM_CPUID_FLAG_SIGNIFCANT_INDEX : 0;
    e.eax = eax;
    e.ebx = ebx;
    e.ecx = ecx;
    e.edx = edx;
    return e;
}

const kvm_cpuid_entry2& find(const std::vector<kvm_cpuid_entry2>& t, std::uint32_t function, std::uint32_t index) {
    for (const auto& e : t)
        if (e.function == function && e.index == index) return e;
    FAIL("no leaf " << function << "." << index);
    return t.front();
}

// x87, SSE and AVX state (XCR0 bits 0-2): AVX's 256 bytes at offset 576.
std::vector<kvm_cpuid_entry2> table(bool avx_in_leaf1) {
    return {
        leaf(1, 0, 0x800f12, 0, avx_in_leaf1 ? (1u << 28) | (1u << 26) : (1u << 26), 0, false),
        leaf(7, 0, 0, 0, 0, 0, true),
        leaf(0xd, 0, 0x7, 576, 832, 0, true),
        leaf(0xd, 1, 0, 0, 0, 0, true),
        leaf(0xd, 2, 256, 576, 0, 0, true),
    };
}

} // namespace

TEST_CASE("apply_cpuid_fixups: sets the hypervisor bit, and TSC-deadline only when asked") {
    auto t = table(true);
    hv::apply_cpuid_fixups(t, {});
    CHECK((find(t, 1, 0).ecx & (1u << 31)) != 0);
    CHECK((find(t, 1, 0).ecx & (1u << 24)) == 0);
    CHECK((find(t, 1, 0).ecx & (1u << 28)) != 0); // other bits kept
    hv::CpuidFixups with_deadline;
    with_deadline.tsc_deadline = true;
    hv::apply_cpuid_fixups(t, with_deadline);
    CHECK((find(t, 1, 0).ecx & (1u << 24)) != 0);
}

TEST_CASE("apply_cpuid_fixups: without a local APIC (--platform bare) CPUID claims no APIC, x2APIC or TSC-deadline") {
    std::vector<kvm_cpuid_entry2> t = {
        leaf(1, 0, 0x800f12, 0, (1u << 21) | (1u << 24) | (1u << 26), (1u << 9) | (1u << 0), false),
        leaf(0x80000001, 0, 0, 0, 0, (1u << 9) | (1u << 11), false),
    };
    hv::CpuidFixups bare;
    bare.local_apic = false;
    bare.tsc_deadline = true; // asked for, but there is no local APIC to have it
    hv::apply_cpuid_fixups(t, bare);
    CHECK(find(t, 1, 0).edx == (1u << 0));
    CHECK(find(t, 1, 0).ecx == ((1u << 26) | (1u << 31)));
    CHECK(find(t, 0x80000001, 0).edx == (1u << 11));

    std::vector<kvm_cpuid_entry2> pc = {leaf(1, 0, 0, 0, 1u << 21, 1u << 9, false)};
    hv::apply_cpuid_fixups(pc, {});
    CHECK(find(pc, 1, 0).edx == (1u << 9));
    CHECK((find(pc, 1, 0).ecx & (1u << 21)) != 0);
}

TEST_CASE("apply_cpuid_fixups: XSAVE state for a feature the CPU shows keeps its leaves") {
    auto t = table(true);
    hv::apply_cpuid_fixups(t, {});
    CHECK(find(t, 0xd, 0).eax == 0x7);
    CHECK(find(t, 0xd, 0).ecx == 832);
    CHECK(find(t, 0xd, 2).eax == 256);
    CHECK(find(t, 0xd, 2).ebx == 576);
}

TEST_CASE("apply_cpuid_fixups: XSAVE state of a feature leaf 1 hides is dropped with its size") {
    auto t = table(false);
    hv::apply_cpuid_fixups(t, {});
    CHECK(find(t, 0xd, 0).eax == 0x3);      // x87 and SSE only
    CHECK(find(t, 0xd, 0).ecx == 576);      // legacy area + header
    CHECK(find(t, 0xd, 0).ebx <= 576);
    CHECK(find(t, 0xd, 2).eax == 0);        // the AVX sub-leaf is empty
    CHECK(find(t, 0xd, 2).ebx == 0);
}

TEST_CASE("apply_cpuid_fixups: a table without leaves 1 or 0xD is left alone") {
    std::vector<kvm_cpuid_entry2> t = {leaf(0, 0, 0xd, 1, 2, 3, false)};
    hv::apply_cpuid_fixups(t, {});
    REQUIRE(t.size() == 1);
    CHECK(t[0].eax == 0xd);
    CHECK(t[0].ebx == 1);
}
