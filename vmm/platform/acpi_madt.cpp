#include "vmm/platform/acpi_madt.hpp"

#include "vmm/kvm/pc_wiring.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/platform/acpi_sdt.hpp"

#include <algorithm>
#include <string>

// Entry layouts from ACPI 6.5, 5.2.12.2 (local APIC), 5.2.12.3 (IOAPIC),
// 5.2.12.5 (interrupt source override), 5.2.12.7 (local APIC NMI),
// 5.2.12.12 (local x2APIC), 5.2.12.13 (local x2APIC NMI).

namespace hv {
namespace {

using namespace acpi_sdt;

// MADT, revision 6 (ACPI 6.5).
constexpr std::uint8_t kMadtRevision = 6;
constexpr std::size_t kMadtFixedSize = 44; // header, local APIC address, flags
constexpr std::uint32_t kMadtPcatCompat = 1u << 0; // KVM's dual 8259 PIC exists too; an OS using the APICs masks it

namespace madt {
constexpr std::uint8_t kLocalApic = 0;
constexpr std::uint8_t kIoApic = 1;
constexpr std::uint8_t kInterruptSourceOverride = 2;
constexpr std::uint8_t kLocalApicNmi = 4;
constexpr std::uint8_t kLocalX2Apic = 9;
constexpr std::uint8_t kLocalX2ApicNmi = 10;

constexpr std::uint8_t kLocalApicSize = 8;
constexpr std::uint8_t kIoApicSize = 12;
constexpr std::uint8_t kInterruptSourceOverrideSize = 10;
constexpr std::uint8_t kLocalApicNmiSize = 6;
constexpr std::uint8_t kLocalX2ApicSize = 16;
constexpr std::uint8_t kLocalX2ApicNmiSize = 12;

constexpr std::uint32_t kEnabled = 1u << 0;

// An xAPIC ID is 8 bits and 0xff means "all": CPUs with APIC ID 255 and up
// must be described by x2APIC entries (and Linux ignores x2APIC entries
// below 255 when xAPIC ones exist).
constexpr std::uint32_t kFirstX2ApicId = 255;

constexpr std::uint8_t kIsaBus = 0;
constexpr std::uint8_t kAllProcessors = 0xff;        // Local APIC NMI's 8-bit processor UID
constexpr std::uint32_t kAllX2Processors = 0xffffffff; // Local x2APIC NMI's 32-bit UID
constexpr std::uint8_t kLint1 = 1;                   // where PCs wire NMI
} // namespace madt

std::uint32_t xapic_cpus(std::uint32_t cpus) { return std::min(cpus, madt::kFirstX2ApicId); }

} // namespace

std::size_t madt_size(std::uint32_t cpus) {
    const std::uint32_t x2apic_cpus = cpus - xapic_cpus(cpus);
    return kMadtFixedSize + xapic_cpus(cpus) * madt::kLocalApicSize + x2apic_cpus * madt::kLocalX2ApicSize +
           madt::kIoApicSize + 2 * madt::kInterruptSourceOverrideSize + madt::kLocalApicNmiSize +
           (x2apic_cpus ? madt::kLocalX2ApicNmiSize : 0);
}

void write_madt(FirmwareBlob& blob, const AcpiPlatform& platform, std::size_t at, std::size_t size) {
    using namespace madt;
    using namespace pc_wiring;
    write_header(blob, at, "APIC", size, kMadtRevision);
    blob.u32(at + 36, platform.lapic_address);
    blob.u32(at + 40, kMadtPcatCompat);

    std::size_t next = at + kMadtFixedSize;
    // One entry per vCPU in APIC ID order, so the boot CPU (APIC ID 0) comes
    // first; the processor UID is the vCPU index too.
    for (std::uint32_t cpu = 0; cpu < platform.cpus; ++cpu) {
        if (cpu < kFirstX2ApicId) {
            blob.u8(next, kLocalApic);
            blob.u8(next + 1, kLocalApicSize);
            blob.u8(next + 2, static_cast<std::uint8_t>(cpu)); // processor UID
            blob.u8(next + 3, static_cast<std::uint8_t>(cpu)); // APIC ID
            blob.u32(next + 4, kEnabled);
            next += kLocalApicSize;
        } else {
            blob.u8(next, kLocalX2Apic);
            blob.u8(next + 1, kLocalX2ApicSize);
            blob.u32(next + 4, cpu);  // x2APIC ID
            blob.u32(next + 8, kEnabled);
            blob.u32(next + 12, cpu); // processor UID
            next += kLocalX2ApicSize;
        }
    }

    blob.u8(next, kIoApic);
    blob.u8(next + 1, kIoApicSize);
    blob.u8(next + 2, platform.ioapic_id);
    blob.u32(next + 4, platform.ioapic_address);
    blob.u32(next + 8, 0); // GSI base: pin n is GSI n
    next += kIoApicSize;

    // ISA IRQs without an override are identity-mapped, edge-triggered and
    // active-high. IRQ 0, the PIT, is on GSI 2 as on real PCs and QEMU
    // (pc_wiring.hpp); bus-conforming flags.
    blob.u8(next, kInterruptSourceOverride);
    blob.u8(next + 1, kInterruptSourceOverrideSize);
    blob.u8(next + 2, kIsaBus);
    blob.u8(next + 3, kPitIrq);
    blob.u32(next + 4, kPitIoApicPin);
    blob.u16(next + 8, kIntiConforming);
    next += kInterruptSourceOverrideSize;

    // The SCI is the exception ACPI requires to be stated: it is level-
    // triggered. Active-high, because the VMM asserts it by raising the line
    // (KVM_IRQ_LINE level 1), as QEMU does for its SCI.
    blob.u8(next, kInterruptSourceOverride);
    blob.u8(next + 1, kInterruptSourceOverrideSize);
    blob.u8(next + 2, kIsaBus);
    blob.u8(next + 3, platform.sci_irq);
    blob.u32(next + 4, platform.sci_irq); // GSI
    blob.u16(next + 8, kIntiActiveHigh | kIntiLevelTriggered);
    next += kInterruptSourceOverrideSize;

    // Every local APIC's LINT1 is the NMI input; flags 0: as the bus conforms.
    blob.u8(next, kLocalApicNmi);
    blob.u8(next + 1, kLocalApicNmiSize);
    blob.u8(next + 2, kAllProcessors);
    blob.u16(next + 3, 0);
    blob.u8(next + 5, kLint1);
    next += kLocalApicNmiSize;

    // ACPI describes the NMI wiring of x2APIC-only processors with the x2APIC form.
    if (platform.cpus > kFirstX2ApicId) {
        blob.u8(next, kLocalX2ApicNmi);
        blob.u8(next + 1, kLocalX2ApicNmiSize);
        blob.u16(next + 2, 0);
        blob.u32(next + 4, kAllX2Processors);
        blob.u8(next + 8, kLint1);
        next += kLocalX2ApicNmiSize;
    }

    if (next != at + size)
        throw VmmError("internal: the MADT is " + std::to_string(next - at) + " bytes, planned " +
                       std::to_string(size));
    finish_table(blob, at, size);
}

} // namespace hv
