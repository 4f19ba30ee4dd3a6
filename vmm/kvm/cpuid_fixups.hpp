#pragma once
// What KVM_GET_SUPPORTED_CPUID leaves for the VMM to decide (api.rst):
// the hypervisor bit, the local APIC bits (a VM without the in-kernel
// irqchip has no local APIC, so CPUID must not claim one, nor x2APIC), the
// TSC-deadline timer of the in-kernel local APIC, and XSAVE leaves that
// agree with the feature bits. A stock Linux kernel
// needs the first to find KVM's paravirtual clock (otherwise it calibrates
// the TSC against the PIT and may give up), uses the second instead of
// calibrating the local APIC timer, and warns at length when the third does
// not hold (a nested host can report XSAVE state for a feature its CPUID
// leaf 1 or 7 hides).
#include <cstdint>
#include <linux/kvm.h>
#include <vector>

namespace hv {

namespace cpuid_bits {
inline constexpr std::uint32_t kLeaf1EdxApic = 1u << 9;
inline constexpr std::uint32_t kLeaf1EcxX2apic = 1u << 21;
inline constexpr std::uint32_t kLeaf1EcxTscDeadline = 1u << 24;
inline constexpr std::uint32_t kLeaf80000001EdxApic = 1u << 9; // AMD's copy of leaf 1's
inline constexpr std::uint32_t kLeaf1EcxAvx = 1u << 28;
inline constexpr std::uint32_t kLeaf1EcxHypervisor = 1u << 31;
inline constexpr std::uint32_t kLeaf7EbxMpx = 1u << 14;
inline constexpr std::uint32_t kLeaf7EbxAvx512f = 1u << 16;
inline constexpr std::uint32_t kLeaf7EcxPku = 1u << 3;
} // namespace cpuid_bits

struct CpuidFixups {
    bool local_apic = true;    // false: clear the APIC, x2APIC and TSC-deadline bits
    bool tsc_deadline = false; // only with an in-kernel local APIC (KVM_CAP_TSC_DEADLINE_TIMER)
};

void apply_cpuid_fixups(std::vector<kvm_cpuid_entry2>& entries, const CpuidFixups& fixups);

} // namespace hv
