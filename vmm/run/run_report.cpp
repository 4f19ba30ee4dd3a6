#include "vmm/run/run_report.hpp"

#include "vmm/kvm/file_util.hpp"
#include "vmm/kvm/text_format.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>

namespace hv {
namespace {

std::string number(double v) {
    char b[32];
    std::snprintf(b, sizeof b, "%.3f", v);
    return b;
}

std::uint64_t total_exits(const RunReport& r) {
    std::uint64_t total = 0;
    for (std::uint64_t n : r.exits) total += n;
    return total;
}

} // namespace

const char* json_reason(StopReason reason) {
    switch (reason) {
    case StopReason::DebugExit: return "debug-exit";
    case StopReason::AllHalted: return "all-halted";
    case StopReason::GuestCrash: return "guest-crash";
    case StopReason::Timeout: return "timeout";
    case StopReason::GuestShutdown: return "guest-shutdown";
    case StopReason::ConsoleQuit: return "console-quit";
    case StopReason::VmmFailure:
    case StopReason::None: break;
    }
    return "vmm-error";
}

std::string run_stats_text(const RunReport& r) {
    std::string out = "vmm stats:\n";
    auto line = [&out](const char* name, const std::string& value) {
        char b[64];
        std::snprintf(b, sizeof b, "  %-20s ", name);
        out += b + value + "\n";
    };
    line("first guest output", r.first_output_ms ? number(*r.first_output_ms) + " ms" : "none");
    line("total run time", number(r.total_ms) + " ms");
    line("vcpus", std::to_string(r.cpus));
    if (!r.never_started.empty())
        line("vcpus never started", std::to_string(r.never_started.size()) + " (waiting for INIT/SIPI: vcpu " +
                                        format_vcpu_list(r.never_started) + ")");
    line("exits", std::to_string(total_exits(r)));
    for (int k = 0; k < kExitKindCount; ++k)
        if (r.exits[k]) {
            char b[64];
            std::snprintf(b, sizeof b, "    %-18s %llu\n", to_string(static_cast<ExitKind>(k)),
                          static_cast<unsigned long long>(r.exits[k]));
            out += b;
        }
    line("vmm peak rss", std::to_string(r.peak_rss_kib) + " KiB");
    if (r.cpus && r.vcpus_rss_kib >= 0) {
        char b[128];
        std::snprintf(b, sizeof b, "%.1f KiB (vCPU fds, kvm_run pages, threads: %ld KiB for %u)",
                      static_cast<double>(r.vcpus_rss_kib) / r.cpus, r.vcpus_rss_kib, r.cpus);
        line("vmm rss per vcpu", b);
    }
    return out + r.extra_stats;
}

std::string run_report_json(const RunReport& r) {
    std::string o = "{\n";
    o += "  \"image\": " + json_string(r.image) + ",\n";
    o += "  \"image_kind\": " + (r.image_kind ? json_string(*r.image_kind) : std::string("null")) + ",\n";
    o += "  \"platform\": " + json_string(r.platform) + ",\n";
    o += "  \"paging\": " + json_string(r.paging) + ",\n";
    o += "  \"cpus\": " + std::to_string(r.cpus) + ",\n";
    o += "  \"mem_bytes\": " + std::to_string(r.mem) + ",\n";
    o += "  \"end\": {\"reason\": " + json_string(json_reason(r.end.reason)) +
         ", \"exit_status\": " + std::to_string(r.end.status) + ", \"message\": " + json_string(r.end.message) +
         ", \"guest_exit_code\": " + (r.guest_exit_code ? std::to_string(*r.guest_exit_code) : "null") + "},\n";
    o += "  \"first_output_ms\": " + (r.first_output_ms ? number(*r.first_output_ms) : std::string("null")) + ",\n";
    o += "  \"total_ms\": " + number(r.total_ms) + ",\n";
    o += "  \"exits\": {\"total\": " + std::to_string(total_exits(r));
    for (int k = 0; k < kExitKindCount; ++k)
        o += ", " + json_string(to_string(static_cast<ExitKind>(k))) + ": " + std::to_string(r.exits[k]);
    o += "},\n";
    o += "  \"vmm_peak_rss_kib\": " + std::to_string(r.peak_rss_kib) + ",\n";
    o += "  \"vcpus_never_started\": [";
    for (std::size_t i = 0; i < r.never_started.size(); ++i)
        o += (i ? ", " : "") + std::to_string(r.never_started[i]);
    o += "],\n";
    o += std::string("  \"shadow\": ") + (r.paging == "shadow" ? "true" : "false") + "\n}\n";
    return o;
}

// Written beside the target and renamed over it, so a reader finds the old
// report or the whole new one, never a part (a killed run, a full disk).
// A FIFO or device at either path is refused: the rename would replace it,
// and opening a FIFO would wait for a reader.
void write_run_report(const std::string& path, const RunReport& r) {
    const std::string partial = path + ".partial";
    require_regular_or_new(path, "--json");
    require_regular_or_new(partial, "--json's temporary file");
    std::ofstream f(partial, std::ios::trunc);
    f << run_report_json(r);
    f.close();
    if (!f || std::rename(partial.c_str(), path.c_str()) != 0) {
        const int err = errno;
        std::remove(partial.c_str());
        throw VmmError("--json: cannot write '" + path + "': " + std::strerror(err ? err : EIO));
    }
}

} // namespace hv
