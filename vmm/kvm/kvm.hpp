#pragma once
// RAII wrappers for the three kinds of KVM file descriptor: the system
// (/dev/kvm), a VM and a vCPU with its shared kvm_run page. Each ioctl that
// can fail throws VmmError naming the ioctl and errno.
#include "vmm/kvm/memory_mapping.hpp"
#include "vmm/kvm/unique_fd.hpp"

#include <cstdint>
#include <linux/kvm.h>
#include <memory>
#include <string>
#include <vector>

namespace hv {

// Capabilities the VMM relies on, checked once with a message naming the
// missing ones.
struct KvmCapability {
    int id;
    const char* name;
    const char* why;
};
const std::vector<KvmCapability>& required_capabilities();
// What a Linux guest's PC platform needs on top of those.
const std::vector<KvmCapability>& pc_platform_capabilities();

// CPUID entries as KVM_GET_SUPPORTED_CPUID returns them.
class CpuidTable {
public:
    explicit CpuidTable(std::vector<kvm_cpuid_entry2> entries) : entries_(std::move(entries)) {}
    const std::vector<kvm_cpuid_entry2>& entries() const { return entries_; }
    // A copy with the APIC ID fields (leaf 1 EBX[31:24], leaves 0xB/0x1F EDX) set for `vcpu`.
    std::vector<kvm_cpuid_entry2> for_vcpu(std::uint32_t vcpu) const;

private:
    std::vector<kvm_cpuid_entry2> entries_;
};

class Kvm {
public:
    // Opens /dev/kvm; throws VmmError saying why it cannot (missing module, permissions).
    static Kvm open(const char* path = "/dev/kvm");
    // True when /dev/kvm can be opened read/write; otherwise fills `reason`.
    static bool available(std::string* reason, const char* path = "/dev/kvm");

    int api_version() const;
    int check_extension(int cap) const; // 0 when absent
    // Throws naming every missing capability.
    void require_capabilities(const std::vector<KvmCapability>& caps = required_capabilities()) const;
    unsigned max_vcpus() const;         // KVM_CAP_MAX_VCPUS (falls back to NR_VCPUS)
    std::size_t vcpu_mmap_size() const;
    CpuidTable supported_cpuid() const;
    int fd() const { return fd_.get(); }

private:
    explicit Kvm(UniqueFd fd) : fd_(std::move(fd)) {}
    UniqueFd fd_;
};

class KvmVcpu;

class KvmVm {
public:
    explicit KvmVm(const Kvm& kvm);
    void set_user_memory(std::uint32_t slot, std::uint64_t gpa, std::uint64_t size, void* host);
    void set_tss_addr(std::uint64_t gpa);
    // The PC's interrupt hardware inside KVM: PIC, IOAPIC, a local APIC per
    // vCPU (created after this), and the PIT, wired as on a PC (and QEMU):
    // GSI n reaches PIC input n and IOAPIC pin n, except that the PIT's GSI 0
    // goes to IOAPIC pin 2 (the ISA IRQ 0 override the MADT and MP table
    // state) and GSI 2, the PICs' cascade, to no IOAPIC pin. Needs
    // KVM_CAP_IRQCHIP, KVM_CAP_PIT2 and KVM_CAP_IRQ_ROUTING.
    void create_pc_irqchip();
    // Drives an input of the in-kernel PIC/IOAPIC (KVM_IRQ_LINE).
    void set_irq_line(std::uint32_t gsi, bool level);
    // KVM_CAP_X2APIC_API: 32-bit APIC IDs in KVM_GET/SET_LAPIC and MSI
    // routes, and an IOAPIC or MSI destination of 0xff in x2APIC mode means
    // APIC 255 rather than a broadcast, as on hardware. IPIs through the ICR
    // are the same either way. False when KVM lacks it (nothing changed).
    bool enable_x2apic_api(const Kvm& kvm);
    std::unique_ptr<KvmVcpu> create_vcpu(std::uint32_t index, std::size_t run_size);
    int fd() const { return fd_.get(); }

private:
    UniqueFd fd_;
};

class KvmVcpu {
public:
    KvmVcpu(UniqueFd fd, std::size_t run_size, std::uint32_t index);
    std::uint32_t index() const { return index_; }
    kvm_run& run() const { return *reinterpret_cast<kvm_run*>(run_map_.data()); }
    int fd() const { return fd_.get(); }

    kvm_regs get_regs() const;
    void set_regs(const kvm_regs& regs);
    kvm_sregs get_sregs() const;
    void set_sregs(const kvm_sregs& sregs);
    void set_cpuid(const std::vector<kvm_cpuid_entry2>& entries);
    void set_fpu_defaults();
    // One KVM_RUN; returns 0 or -errno (EINTR when kicked).
    int enter();
    // KVM_NMI: queue an NMI, delivered at the next entry (no in-kernel irqchip).
    void nmi();
    // KVM_GET_TSC_KHZ, or 0 when KVM cannot say.
    std::uint64_t tsc_khz() const;
    // KVM_GET/SET_MP_STATE (KVM_MP_STATE_RUNNABLE, _UNINITIALIZED: waiting
    // for INIT/SIPI, _HALTED, ...). Only between KVM_RUNs of this vCPU: the
    // ioctl waits for a vCPU inside KVM_RUN.
    std::uint32_t mp_state() const;
    void set_mp_state(std::uint32_t state);
    // An NMI waits for this vCPU (KVM_GET_VCPU_EVENTS: pending or being
    // injected); it wakes a vCPU halted with interrupts off. Same rule as
    // mp_state().
    bool nmi_pending() const;

private:
    UniqueFd fd_;
    Mapping run_map_;
    std::uint32_t index_;
};

// Whether KVM uses two-dimensional paging (EPT/NPT): read from the kvm_intel
// `ept` / kvm_amd `npt` module parameters; kvm_pvm (paravirtual, shadow
// paging only) never has it. Empty module when none of them is loaded.
struct TdpStatus {
    std::string module;    // "kvm_intel", "kvm_amd", "kvm_pvm" or ""
    std::string parameter; // "ept", "npt" or "" (kvm_pvm has no TDP)
    bool enabled = false;
};
TdpStatus tdp_status(const std::string& sysfs_root = "/sys/module");

} // namespace hv
