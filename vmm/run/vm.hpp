#pragma once
// `vmm run`: builds a VM from the options, runs one thread per vCPU, and
// ends it when a vCPU writes the debug-exit port, the guest powers off or
// resets the machine, every vCPU halted with interrupts off (or still waits
// for INIT/SIPI), a fatal exit happened, or the timeout expired. Returns the
// exit status of `vmm run` (see vmm_error.hpp).
#include "vmm/run/run_report.hpp"
#include "vmm/shadow/shadow_vm.hpp"

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace hv {

// What the guest finds around its CPUs. pc: the PC of DESIGN.md ("The PC
// every guest gets"): KVM's in-kernel PIC, IOAPIC, local APICs and PIT, ACPI
// and MP tables, fw_cfg, the ACPI PM timer and PM1 registers, i8042,
// CMOS/RTC, the serial port on IRQ 4. bare: CPUs, RAM, the serial port
// (polled), the debug-exit and hypercall ports, nothing else; CPUID then
// reports no local APIC.
enum class Platform { Pc, Bare };
const char* to_string(Platform platform);
std::optional<Platform> platform_named(std::string_view name); // the inverse of to_string

struct RunOptions {
    std::string image;
    Platform platform = Platform::Pc;
    std::uint32_t cpus = 1;
    std::uint64_t mem = 128ull << 20;
    std::optional<std::string> initrd;
    std::string cmdline;
    std::optional<std::string> serial_file;
    double timeout_seconds = 0; // 0: no timeout
    bool stats = false;
    std::optional<std::string> json_file; // --json: the run's result as JSON (run_report.hpp)
    bool strict_io = false;
    bool console_input = true; // stdin to the serial port (false: the guest's console gets no input)
    enum class Paging { Identity, Shadow } paging = Paging::Identity;
    ShadowOptions shadow; // --paging shadow only
};

// Throws VmmError for problems found before the guest starts.
int run_vm(const RunOptions& options);

// Checks of the options that need no KVM; throws VmmError. Exposed for tests.
void validate_run_options(const RunOptions& options);

// The part of a run's report the options decide (image, platform, paging,
// CPUs, RAM), before anything ran. Exposed for tests.
RunReport base_report(const RunOptions& options);

// Writes --json's report of a run that failed before or while it started
// (end.reason "vmm-error"); does nothing without --json, and never throws:
// the failure itself is what the caller reports.
void write_failure_report(const RunOptions& options, const std::string& message,
                          std::optional<std::string> image_kind = std::nullopt);

} // namespace hv
