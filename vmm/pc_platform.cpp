#include "pc_platform.hpp"

#include "acpi_tables.hpp"
#include "vmm_error.hpp"

#include <string>

namespace hv {

PcPlatform::PcPlatform(KvmVm& vm, Bus& ports, Serial16550& serial, StopLatch& stop, std::uint64_t ram_size)
    : i8042_([&stop] { stop.request(StopReason::GuestShutdown, 0, "guest reset the machine through the i8042 (reboot)"); },
             [&vm](bool level) { vm.set_irq_line(isa_irq::kKeyboard, level); },
             [&vm](bool level) { vm.set_irq_line(isa_irq::kAux, level); }),
      cmos_(ram_size),
      pm_([&stop](std::uint8_t slp_typ) {
          if (slp_typ == kAcpiS5SleepType)
              stop.request(StopReason::GuestShutdown, 0, "guest powered off (ACPI S5)");
          else // only \_S5 is in the DSDT, so a kernel has no other value to write
              stop.request(StopReason::GuestCrash, exit_status::kGuestCrash,
                           "guest entered ACPI sleep type " + std::to_string(slp_typ) + ", which this VMM does not offer");
      }) {
    ports.add(I8042::data_port_address, I8042::port_size, i8042_.data_port(), "i8042 data");
    ports.add(I8042::command_port_address, I8042::port_size, i8042_.command_port(), "i8042 status/command");
    ports.add(CmosRtc::port, CmosRtc::size, cmos_, "CMOS/RTC");
    AcpiPlatform acpi;
    ports.add(acpi.pm_base, AcpiPmRegisters::size, pm_, "ACPI PM1a event/control");
    ports.add(kPostPort, 1, post_, "POST port");
    serial.set_irq_line([&vm](bool level) { vm.set_irq_line(isa_irq::kSerial0, level); });
}

} // namespace hv
