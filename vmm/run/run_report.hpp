#pragma once
// The result of one `vmm run`: what --stats prints on stderr and what
// --json FILE writes for scripts. Plain data filled by the VM at the end of
// the run (or by run_vm when it fails before the guest starts), so unit
// tests render it without KVM.
//
// JSON (one object; times in milliseconds, sizes in bytes or KiB as named):
//   image, image_kind ("elf64" | "multiboot" | "linux" | null before the
//   image was read), platform ("pc" | "bare"), paging, cpus, mem_bytes,
//   end: { reason, exit_status, message, guest_exit_code }  where reason is
//     "debug-exit" (guest_exit_code: the value written to port 0xf4),
//     "guest-shutdown" (power-off, reset), "all-halted", "guest-crash",
//     "timeout", "console-quit" or "vmm-error"; guest_exit_code is null
//     unless the guest wrote the debug-exit port,
//   first_output_ms (null: no output), total_ms, exits: { total, io, ... },
//   vmm_peak_rss_kib, vcpus_never_started (indices still waiting for
//   INIT/SIPI when the VM ended), shadow (paging == "shadow": the MMU's
//   figures are in the --stats text only).
#include "vmm/kvm/exit_record.hpp"
#include "vmm/kvm/stop_latch.hpp"

#include <array>
#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace hv {

struct RunReport {
    std::string image;
    std::optional<std::string> image_kind;
    std::string platform;
    std::string paging;
    std::uint32_t cpus = 0;
    std::uint64_t mem = 0;

    StopState end;                                // reason None: the VM never ran (end.message says why)
    std::optional<std::uint32_t> guest_exit_code; // the debug-exit value, when that ended the run
    std::optional<double> first_output_ms;
    double total_ms = 0;
    std::array<std::uint64_t, kExitKindCount> exits{};
    long peak_rss_kib = 0;
    long vcpus_rss_kib = -1; // RSS added by creating the vCPUs and their threads; -1: unknown
    std::vector<std::uint32_t> never_started;

    // Extra --stats lines (shadow MMU figures, unclaimed addresses), formatted by their owners.
    std::string extra_stats;
};

// "debug-exit", "all-halted", ... as in the JSON; "vmm-error" for a VMM
// failure or a run that never started.
const char* json_reason(StopReason reason);

std::string run_stats_text(const RunReport& r);
std::string run_report_json(const RunReport& r);
// Writes run_report_json to `path` (a regular file or a new one; written
// beside it and renamed over it); throws VmmError naming the path when it cannot.
void write_run_report(const std::string& path, const RunReport& r);

} // namespace hv
