#include "vmm/platform/mp_table.hpp"

#include "vmm/kvm/pc_wiring.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/platform/firmware_blob.hpp"

#include <algorithm>
#include <cstddef>
#include <string>
#include <string_view>

// Layouts and values are from the Intel MultiProcessor Specification 1.4,
// chapter 4 (floating pointer 4.1, configuration table header 4.2, base
// table entries 4.3) and chapter 5 (default wiring of ISA interrupts).

namespace hv {
namespace {

using namespace pc_wiring;

constexpr std::uint8_t kSpecRevision = 4; // 1.4

// Floating pointer structure.
constexpr std::size_t kFloatingSize = 16;
constexpr std::uint8_t kFloatingLength = 1; // in 16-byte units
constexpr std::size_t kFloatingAlignment = 16;

// Configuration table header.
constexpr std::size_t kHeaderSize = 44;
constexpr std::string_view kOemId = "HVVMM   ";        // 8 bytes
constexpr std::string_view kProductId = "HVVMM PC    "; // 12 bytes

// Entry types, in the order they must appear, and their sizes.
constexpr std::uint8_t kProcessor = 0, kBus = 1, kIoApic = 2, kIoInterrupt = 3, kLocalInterrupt = 4;
constexpr std::size_t kProcessorSize = 20;
constexpr std::size_t kOtherEntrySize = 8;

constexpr std::uint8_t kLocalApicVersion = 0x14; // KVM's local APIC
constexpr std::uint8_t kIoApicVersion = 0x11;    // KVM's in-kernel IOAPIC
constexpr std::uint8_t kCpuEnabled = 1u << 0;
constexpr std::uint8_t kCpuBootProcessor = 1u << 1;
constexpr std::uint32_t kCpuSignature = 0x600;            // family 6, model 0, stepping 0
constexpr std::uint32_t kCpuFeatures = (1u << 0) | (1u << 9); // CPUID.1:EDX FPU, APIC
constexpr std::uint8_t kIoApicEnabled = 1u << 0;

// Interrupt types.
constexpr std::uint8_t kInt = 0, kNmi = 1, kExtInt = 3;

constexpr std::uint8_t kIsaBus = 0;
constexpr std::string_view kIsaBusType = "ISA   "; // 6 bytes
constexpr std::uint8_t kAllLocalApics = 0xff;
constexpr std::uint8_t kLint0 = 0, kLint1 = 1;

constexpr std::uint64_t kOneMiB = 0x100000;

std::uint32_t listed_cpus(std::uint32_t cpus) { return std::min(cpus, kMpMaxListedCpus); }

// I/O interrupt entries: every ISA IRQ but the cascade.
constexpr std::size_t kIoInterrupts = kIsaIrqs - 1;
constexpr std::size_t kLocalInterrupts = 2;

std::size_t entry_count(std::uint32_t cpus) { return listed_cpus(cpus) + 1 + 1 + kIoInterrupts + kLocalInterrupts; }

std::size_t table_size(std::uint32_t cpus) {
    return kHeaderSize + listed_cpus(cpus) * kProcessorSize +
           (entry_count(cpus) - listed_cpus(cpus)) * kOtherEntrySize;
}

// The MP structures are written in order: a cursor over the blob's stores.
class Writer {
public:
    explicit Writer(FirmwareBlob& blob) : blob_(blob) {}
    void u8(std::uint8_t value) { blob_.u8(at_++, value); }
    void u16(std::uint16_t value) { blob_.u16(advance(2), value); }
    void u32(std::uint32_t value) { blob_.u32(advance(4), value); }
    void text(std::string_view chars) { blob_.text(advance(chars.size()), chars); }
    void zeros(std::size_t n) { advance(n); } // the blob starts zero-filled
    std::size_t at() const { return at_; }

private:
    std::size_t advance(std::size_t n) {
        const std::size_t here = at_;
        at_ += n;
        return here;
    }
    FirmwareBlob& blob_;
    std::size_t at_ = 0;
};

void io_interrupt(Writer& w, const AcpiPlatform& p, std::uint8_t type, std::uint16_t flags, std::uint8_t irq,
                  std::uint8_t pin) {
    w.u8(kIoInterrupt);
    w.u8(type);
    w.u16(flags);
    w.u8(kIsaBus);
    w.u8(irq);
    w.u8(p.ioapic_id);
    w.u8(pin);
}

void local_interrupt(Writer& w, std::uint8_t type, std::uint8_t lint) {
    w.u8(kLocalInterrupt);
    w.u8(type);
    w.u16(kIntiConforming);
    w.u8(kIsaBus);
    w.u8(0); // source bus IRQ: unused
    w.u8(kAllLocalApics);
    w.u8(lint);
}

void validate(const AcpiPlatform& p, std::uint64_t base) {
    if (p.cpus == 0 || p.cpus > kMpMaxCpus)
        throw VmmError("MP table: " + std::to_string(p.cpus) + " vCPUs requested; expected 1 to " +
                       std::to_string(kMpMaxCpus));
    if (p.sci_irq >= kIsaIrqs || p.sci_irq == kPitIrq || p.sci_irq == kCascadeIrq)
        throw VmmError("MP table: SCI IRQ " + std::to_string(p.sci_irq) +
                       "; expected an ISA IRQ from 1 to 15 other than 2 (the cascade)");
    if (base % kFloatingAlignment != 0)
        throw VmmError("MP table at " + hex(base) + ": expected a 16-byte aligned address for the floating pointer");
    const std::size_t size = kFloatingSize + table_size(p.cpus);
    if (base >= kOneMiB || size > kOneMiB - base)
        throw VmmError("MP table for " + std::to_string(p.cpus) + " vCPUs at " + hex(base) + " takes " +
                       std::to_string(size) + " bytes; expected it to end at or below 1 MiB (0x100000)");
}

} // namespace

std::vector<std::uint8_t> build_mp_table(const AcpiPlatform& p, std::uint64_t base_gpa) {
    validate(p, base_gpa);
    const std::size_t table = kFloatingSize;
    const std::size_t size = table_size(p.cpus);
    FirmwareBlob blob(kFloatingSize + size);
    Writer w(blob);

    // Floating pointer structure.
    w.text("_MP_");
    w.u32(static_cast<std::uint32_t>(base_gpa + table));
    w.u8(kFloatingLength);
    w.u8(kSpecRevision);
    w.u8(0); // checksum
    w.u8(0); // feature byte 1: a configuration table is present
    w.u8(0); // feature byte 2: IMCRP clear, virtual-wire mode
    w.zeros(3);

    // Configuration table header.
    w.text("PCMP");
    w.u16(static_cast<std::uint16_t>(size));
    w.u8(kSpecRevision);
    w.u8(0); // checksum
    w.text(kOemId);
    w.text(kProductId);
    w.u32(0); // no OEM table
    w.u16(0);
    w.u16(static_cast<std::uint16_t>(entry_count(p.cpus)));
    w.u32(p.lapic_address);
    w.u16(0); // no extended table
    w.u8(0);
    w.u8(0); // reserved

    for (std::uint32_t cpu = 0; cpu < listed_cpus(p.cpus); ++cpu) {
        w.u8(kProcessor);
        w.u8(static_cast<std::uint8_t>(cpu)); // local APIC ID
        w.u8(kLocalApicVersion);
        w.u8(static_cast<std::uint8_t>(cpu == 0 ? kCpuEnabled | kCpuBootProcessor : kCpuEnabled));
        w.u32(kCpuSignature);
        w.u32(kCpuFeatures);
        w.zeros(8);
    }

    w.u8(kBus);
    w.u8(kIsaBus);
    w.text(kIsaBusType);

    w.u8(kIoApic);
    w.u8(p.ioapic_id);
    w.u8(kIoApicVersion);
    w.u8(kIoApicEnabled);
    w.u32(p.ioapic_address);

    for (std::uint8_t irq = 0; irq < kIsaIrqs; ++irq) {
        if (irq == kCascadeIrq) continue;
        const std::uint16_t flags = irq == p.sci_irq ? kIntiActiveHigh | kIntiLevelTriggered : kIntiConforming;
        io_interrupt(w, p, kInt, flags, irq, irq == kPitIrq ? kPitIoApicPin : irq);
    }

    local_interrupt(w, kExtInt, kLint0);
    local_interrupt(w, kNmi, kLint1);

    if (w.at() != kFloatingSize + size)
        throw VmmError("internal: the MP table is " + std::to_string(w.at()) + " bytes, planned " +
                       std::to_string(kFloatingSize + size));
    blob.checksum(0, kFloatingSize, 10);
    blob.checksum(table, size, table + 7);
    return blob.take();
}

} // namespace hv
