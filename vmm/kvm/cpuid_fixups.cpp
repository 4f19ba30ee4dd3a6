#include "vmm/kvm/cpuid_fixups.hpp"

#include <algorithm>

namespace hv {
namespace {

kvm_cpuid_entry2* find(std::vector<kvm_cpuid_entry2>& entries, std::uint32_t function, std::uint32_t index = 0) {
    for (auto& e : entries)
        if (e.function == function && (!(e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX) || e.index == index)) return &e;
    return nullptr;
}

// XSAVE state components (XCR0 bits) and the feature bit that says the CPU has them.
struct XstateOwner {
    std::uint32_t components;
    std::uint32_t leaf;
    std::uint32_t kvm_cpuid_entry2::*reg;
    std::uint32_t bit;
};
constexpr XstateOwner kXstateOwners[] = {
    {1u << 2, 1, &kvm_cpuid_entry2::ecx, cpuid_bits::kLeaf1EcxAvx},                    // YMM upper halves
    {(1u << 3) | (1u << 4), 7, &kvm_cpuid_entry2::ebx, cpuid_bits::kLeaf7EbxMpx},      // BNDREGS, BNDCSR
    {(1u << 5) | (1u << 6) | (1u << 7), 7, &kvm_cpuid_entry2::ebx, cpuid_bits::kLeaf7EbxAvx512f}, // opmask, ZMM
    {1u << 9, 7, &kvm_cpuid_entry2::ecx, cpuid_bits::kLeaf7EcxPku},                    // PKRU
};

void make_xsave_consistent(std::vector<kvm_cpuid_entry2>& entries) {
    kvm_cpuid_entry2* xsave = find(entries, 0xd, 0);
    if (!xsave) return;
    std::uint32_t drop = 0;
    for (const auto& owner : kXstateOwners) {
        const kvm_cpuid_entry2* leaf = find(entries, owner.leaf, 0);
        if (!leaf || !(leaf->*owner.reg & owner.bit)) drop |= owner.components;
    }
    xsave->eax &= ~drop;
    // ECX: the save area for every component the CPU supports, which now
    // excludes the dropped ones; the legacy area and header take 576 bytes.
    std::uint32_t size = 576;
    for (std::uint32_t c = 2; c < 32; ++c) {
        kvm_cpuid_entry2* sub = find(entries, 0xd, c);
        if (!sub) continue;
        if (drop & (1u << c)) {
            sub->eax = sub->ebx = sub->ecx = sub->edx = 0;
        } else if (xsave->eax & (1u << c)) {
            size = std::max(size, sub->ebx + sub->eax); // offset + size
        }
    }
    xsave->ecx = size;
    xsave->ebx = std::min(xsave->ebx, size); // KVM recomputes EBX from the guest's XCR0 anyway
}

} // namespace

void apply_cpuid_fixups(std::vector<kvm_cpuid_entry2>& entries, const CpuidFixups& fixups) {
    if (kvm_cpuid_entry2* leaf1 = find(entries, 1)) {
        leaf1->ecx |= cpuid_bits::kLeaf1EcxHypervisor;
        if (fixups.tsc_deadline) leaf1->ecx |= cpuid_bits::kLeaf1EcxTscDeadline;
        if (!fixups.local_apic) {
            leaf1->edx &= ~cpuid_bits::kLeaf1EdxApic;
            leaf1->ecx &= ~(cpuid_bits::kLeaf1EcxX2apic | cpuid_bits::kLeaf1EcxTscDeadline);
        }
    }
    if (kvm_cpuid_entry2* ext = find(entries, 0x80000001); ext && !fixups.local_apic)
        ext->edx &= ~cpuid_bits::kLeaf80000001EdxApic;
    make_xsave_consistent(entries);
}

} // namespace hv
