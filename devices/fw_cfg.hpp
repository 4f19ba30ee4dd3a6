#pragma once

#include <cstdint>
#include <mutex>
#include <span>
#include <string>
#include <vector>

#include "devices/io_device.hpp"

namespace hv {

// Item keys of QEMU's fw_cfg, as its x86 machines define them.
namespace fw_cfg_key {
inline constexpr uint16_t kSignature = 0x0000;    // "QEMU"
inline constexpr uint16_t kId = 0x0001;           // u32 feature bits: 1 = traditional interface, 2 = DMA
inline constexpr uint16_t kUuid = 0x0002;         // 16 bytes
inline constexpr uint16_t kRamSize = 0x0003;      // u64
inline constexpr uint16_t kCpuCount = 0x0005;     // u16, FW_CFG_NB_CPUS
inline constexpr uint16_t kMaxCpus = 0x000f;      // u16
inline constexpr uint16_t kCmdlineSize = 0x0014;  // u32
inline constexpr uint16_t kCmdlineData = 0x0015;  // the bytes and the NUL
inline constexpr uint16_t kFileDir = 0x0019;      // big-endian u32 count, then entries
inline constexpr uint16_t kIrq0Override = 0x8002; // architecture-local: u32 1 when ISA IRQ 0 is on GSI 2
inline constexpr uint16_t kWriteChannel = 0x4000; // selector bit 14
inline constexpr uint16_t kArchLocal = 0x8000;    // selector bit 15
} // namespace fw_cfg_key

// What the guest reads from fw_cfg.
struct FwCfgConfig {
    uint16_t cpus = 1;
    // QEMU's x86 machines put the APIC ID limit (highest APIC ID + 1) here;
    // with APIC IDs 0..n-1, as the VMM numbers its vCPUs, that is the CPU
    // count again.
    uint16_t max_cpus = 1;
    uint64_t ram_size = 0;
    // Taken up to its first NUL, as QEMU takes a C string.
    std::string cmdline;
};

// QEMU's firmware configuration device through its legacy x86 I/O ports
// (no DMA): register it at `port` with `size` 2.
//
//   0x510 selector  A 16-bit write selects the item with that key and
//                   resets the read offset to 0; an 8-bit write selects the
//                   zero-extended byte; the low two bytes of a wider write
//                   count. Reads return 0 in every byte and change nothing.
//   0x511 data      Each byte read returns the next byte of the selected
//                   item and advances; past the item's end bytes read 0. A
//                   wider read returns successive bytes (an inl reads what
//                   four inb would). Writes are ignored (QEMU dropped write
//                   support in 2.4).
//
// After construction the signature is selected, as after QEMU's reset.
//
// Items, little-endian as QEMU's x86 machines store them:
//   0x0000 signature   "QEMU"
//   0x0001 ID          u32 1: the traditional interface, no DMA
//   0x0002 UUID        16 zero bytes
//   0x0003 RAM size    u64 ram_size
//   0x0005 CPU count   u16 cpus
//   0x000f max CPUs    u16 max_cpus
//   0x0014 cmdline size  u32 strlen(cmdline) + 1 (1 for an empty one, as
//                      QEMU's -kernel boot sets it)
//   0x0015 cmdline     its bytes and the trailing NUL
//   0x0019 file dir    a big-endian u32 count of 0 (no files)
// Every other key reads as zeros, as QEMU reads keys with no item.
//
// The selector's bit 14 (QEMU's write channel) is ignored when selecting,
// as QEMU masks it off: 0x4005 reads the CPU count. Bit 15 selects QEMU's
// architecture-local table (ACPI tables, E820, IRQ0 override on x86), of
// which only 0x8002, the IRQ0 override, is here: u32 1, ISA IRQ 0 is on
// IOAPIC pin 2, as the MADT says (vmm/platform/acpi_madt.cpp); the other
// architecture-local keys read zeros.
//
// Where this differs from QEMU on purpose: QEMU's combined port takes a byte
// write at either port as a data write (dropped) and a byte read at 0x510
// as a data read, and rejects wider data reads. Guests (SeaBIOS, Linux's
// qemu_fw_cfg driver, kvm-unit-tests) write the selector with a 16-bit
// write and read the data port bytewise, which behave the same here.
//
// Threading: every entry point takes the device's mutex. The items are
// fixed at construction.
class FwCfg final : public IoDevice {
public:
    static constexpr uint16_t port = 0x510;
    static constexpr uint64_t size = 2;

    explicit FwCfg(const FwCfgConfig& config);

    void read(uint64_t offset, std::span<uint8_t> data) override;
    void write(uint64_t offset, std::span<const uint8_t> data) override;

private:
    // The selected item's bytes; empty for keys with no item.
    std::span<const uint8_t> selected_item() const;

    std::vector<std::vector<uint8_t>> items_;  // indexed by key, generic table only
    std::vector<uint8_t> irq0_override_;       // architecture-local key 0x8002
    std::mutex mutex_;
    uint16_t selected_ = fw_cfg_key::kSignature;
    std::size_t offset_ = 0;  // never past the selected item's end
};

}  // namespace hv
