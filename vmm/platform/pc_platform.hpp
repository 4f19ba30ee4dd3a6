#pragma once
// The PC every guest gets (--platform pc): what KVM's in-kernel irqchip and
// PIT (KvmVm::create_pc_irqchip) leave to userspace. The i8042 ends the VM
// when the guest pulses the reset line (reboot), the ACPI PM1 control
// register when it enters S5 (power-off), both with exit status 0; the ACPI
// PM timer counts with host time at the port the FADT names; QEMU's fw_cfg
// tells the CPU count, RAM size and command line; the CMOS/RTC gives the
// wall-clock time; port 0x80 (POST codes, I/O delays) is swallowed; and the
// serial port's and the i8042's interrupt outputs drive KVM_IRQ_LINE. The
// tables in low memory that describe all of it are pc_firmware.hpp's.
#include "devices/acpi_pm.hpp"
#include "devices/acpi_pm_timer.hpp"
#include "devices/bus.hpp"
#include "devices/cmos_rtc.hpp"
#include "devices/fw_cfg.hpp"
#include "devices/i8042.hpp"
#include "devices/serial16550.hpp"
#include "vmm/kvm/kvm.hpp"
#include "vmm/kvm/stop_latch.hpp"

#include <cstdint>
#include <string>

namespace hv {

// Reads as all ones, ignores writes: a port Linux touches that needs no model.
class NullPort final : public IoDevice {
public:
    void read(uint64_t, std::span<uint8_t> data) override {
        for (auto& b : data) b = 0xff;
    }
    void write(uint64_t, std::span<const uint8_t>) override {}
};

inline constexpr std::uint16_t kPostPort = 0x80;

struct PcPlatformConfig {
    std::uint64_t ram_size = 0;
    std::uint32_t cpus = 1;     // also fw_cfg's max CPUs, as QEMU's without CPU hotplug
    std::string cmdline;        // fw_cfg's kernel command line
};

class PcPlatform {
public:
    // Registers the devices on `ports` and wires the interrupts; `vm` must
    // already have its irqchip. Everything passed in must outlive this.
    PcPlatform(KvmVm& vm, Bus& ports, Serial16550& serial, StopLatch& stop, const PcPlatformConfig& config);
    PcPlatform(const PcPlatform&) = delete;
    PcPlatform& operator=(const PcPlatform&) = delete;

private:
    I8042 i8042_;
    CmosRtc cmos_;
    AcpiPmRegisters pm_;
    AcpiPmTimer pm_timer_;
    FwCfg fw_cfg_;
    NullPort post_;
};

} // namespace hv
