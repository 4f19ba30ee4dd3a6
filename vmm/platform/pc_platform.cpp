#include "vmm/platform/pc_platform.hpp"

#include "vmm/kvm/pc_wiring.hpp"
#include "vmm/kvm/vmm_error.hpp"
#include "vmm/platform/acpi_tables.hpp"

#include <string>

namespace hv {
namespace {

FwCfgConfig fw_cfg_config(const PcPlatformConfig& c) {
    FwCfgConfig f;
    f.cpus = static_cast<std::uint16_t>(c.cpus);
    f.max_cpus = f.cpus;
    f.ram_size = c.ram_size;
    f.cmdline = c.cmdline;
    return f;
}

} // namespace

PcPlatform::PcPlatform(KvmVm& vm, Bus& ports, Serial16550& serial, StopLatch& stop, const PcPlatformConfig& config)
    : i8042_([&stop] { stop.request(StopReason::GuestShutdown, 0, "guest reset the machine through the i8042 (reboot)"); },
             [&vm](bool level) { vm.set_irq_line(pc_wiring::kKeyboardIrq, level); },
             [&vm](bool level) { vm.set_irq_line(pc_wiring::kAuxIrq, level); }),
      cmos_(config.ram_size),
      pm_([&stop](std::uint8_t slp_typ) {
          if (slp_typ == kAcpiS5SleepType)
              stop.request(StopReason::GuestShutdown, 0, "guest powered off (ACPI S5)");
          else // only \_S5 is in the DSDT, so a kernel has no other value to write
              stop.request(StopReason::GuestCrash, exit_status::kGuestCrash,
                           "guest entered ACPI sleep type " + std::to_string(slp_typ) + ", which this VMM does not offer");
      }),
      fw_cfg_(fw_cfg_config(config)) {
    ports.add(I8042::data_port_address, I8042::port_size, i8042_.data_port(), "i8042 data");
    ports.add(I8042::command_port_address, I8042::port_size, i8042_.command_port(), "i8042 status/command");
    ports.add(CmosRtc::port, CmosRtc::size, cmos_, "CMOS/RTC");
    AcpiPlatform acpi;
    ports.add(acpi.pm_base, AcpiPmRegisters::size, pm_, "ACPI PM1a event/control");
    ports.add(acpi.pm_timer_port, AcpiPmTimer::size, pm_timer_, "ACPI PM timer");
    ports.add(FwCfg::port, FwCfg::size, fw_cfg_, "fw_cfg (QEMU)");
    ports.add(kPostPort, 1, post_, "POST port");
    serial.set_irq_line([&vm](bool level) { vm.set_irq_line(pc_wiring::kSerial0Irq, level); });
}

} // namespace hv
