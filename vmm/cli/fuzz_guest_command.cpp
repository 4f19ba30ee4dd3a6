// `vmm fuzz-guest`: see fuzz_guest_command.hpp.
#include "vmm/cli/fuzz_guest_command.hpp"

#include "vmm/kvm/file_util.hpp"
#include "vmm/kvm/vmm_error.hpp"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <filesystem>
#include <iterator>

namespace hv {

namespace {
constexpr mmu::LockPolicy kLocks[] = {mmu::LockPolicy::Global, mmu::LockPolicy::Rw, mmu::LockPolicy::Split};
constexpr mmu::CoherencePolicy kCoherences[] = {mmu::CoherencePolicy::Seq, mmu::CoherencePolicy::PtLock,
                                                mmu::CoherencePolicy::RangeActive};
constexpr std::size_t kBatches[] = {1, 2, 3, 64, 512, 0}; // 0: unlimited
constexpr std::uint32_t kMaxCpus = 8;                     // guest/fuzz.c's MAX_CPUS

std::vector<std::string> list_inputs(const std::vector<std::string>& args) {
    namespace fs = std::filesystem;
    std::vector<std::string> inputs;
    for (const std::string& a : args) {
        std::error_code ec;
        if (fs::is_directory(a, ec)) {
            std::vector<std::string> found;
            for (const auto& e : fs::directory_iterator(a, ec))
                if (e.is_regular_file()) found.push_back(e.path().string());
            if (ec) throw VmmError("--input: cannot list " + a + ": " + ec.message());
            std::sort(found.begin(), found.end());
            inputs.insert(inputs.end(), found.begin(), found.end());
        } else if (fs::is_regular_file(a, ec)) {
            inputs.push_back(a);
        } else {
            throw VmmError("--input: expected an input file or a directory, found nothing usable at " + a);
        }
    }
    if (inputs.empty()) throw VmmError("--input: no input files found");
    return inputs;
}
} // namespace

FuzzGuestInput decode_fuzz_guest_input(std::span<const std::uint8_t> bytes, const std::string& name) {
    if (bytes.size() > FuzzGuestInput::kMaxInput)
        throw VmmError(name + ": expected at most " + std::to_string(FuzzGuestInput::kMaxInput) + " bytes (" +
                       std::to_string(FuzzGuestInput::kHeader) + " of configuration and a program of at most " +
                       std::to_string(FuzzGuestInput::kMaxProgram) + "), found " + std::to_string(bytes.size()));
    const auto at = [&](std::size_t i) -> std::uint8_t { return i < bytes.size() ? bytes[i] : 0; };
    FuzzGuestInput in;
    in.cpus = 1 + at(0) % kMaxCpus;
    in.lock = kLocks[at(1) % std::size(kLocks)];
    in.coherence = kCoherences[at(2) % std::size(kCoherences)];
    in.batch = kBatches[at(3) % std::size(kBatches)];
    if (bytes.size() > FuzzGuestInput::kHeader) {
        const std::size_t n = (bytes.size() - FuzzGuestInput::kHeader) & ~std::size_t{1};
        in.program.assign(bytes.begin() + FuzzGuestInput::kHeader, bytes.begin() + FuzzGuestInput::kHeader + n);
    }
    return in;
}

std::string describe(const FuzzGuestInput& in) {
    return std::to_string(in.cpus) + (in.cpus == 1 ? " vCPU, " : " vCPUs, ") + mmu::to_string(in.lock) + "/" +
           mmu::to_string(in.coherence) + "/batch " + (in.batch ? std::to_string(in.batch) : "unlimited") + ", " +
           std::to_string(in.program.size() / 2) + " operations";
}

RunOptions fuzz_guest_run_options(const FuzzGuestInput& in, const std::string& guest_image, double timeout_seconds,
                                  bool skip_shootdown) {
    RunOptions opt;
    opt.image = guest_image;
    opt.cpus = in.cpus;
    opt.mem = 64ull << 20;
    opt.timeout_seconds = timeout_seconds;
    opt.paging = RunOptions::Paging::Shadow;
    opt.console_input = false; // many VMs in one process: none of them reads the terminal
    opt.shadow.region_size = FuzzGuestInput::kRegionPages * 4096;
    opt.shadow.mmu.lock = in.lock;
    opt.shadow.mmu.coherence = in.coherence;
    opt.shadow.mmu.batch = in.batch;
    opt.shadow.skip_shootdown = skip_shootdown;
    static constexpr char kDigits[] = "0123456789abcdef";
    opt.cmdline = "prog=";
    for (const std::uint8_t b : in.program) {
        opt.cmdline += kDigits[b >> 4];
        opt.cmdline += kDigits[b & 15];
    }
    return opt;
}

CLI::App* add_fuzz_guest_subcommand(CLI::App& app, FuzzGuestArgs& a) {
    CLI::App* c = app.add_subcommand(
        "fuzz-guest", "Run inputs of the guest fuzz target: the fuzz guest's program under shadow paging (needs KVM with EPT/NPT)");
    c->add_option("--input", a.inputs, "Input files, or directories of them (run in name order)")->required();
    c->add_option("--guest", a.guest, "The fuzz guest (default: guest/fuzz.elf of this build tree)");
    c->add_option("--timeout", a.timeout, "Seconds each input may run (default 60)")->check(CLI::Range(1.0, 86400.0));
    c->add_flag("--unsafe-skip-shootdown", a.skip_shootdown,
                "DEBUGGING ONLY: never flush guest TLBs after zaps (the check must then find lost writes)");
    return c;
}

int run_fuzz_guest_command(const FuzzGuestArgs& a, std::FILE* out) {
    const std::string guest = a.guest.empty() ? build_tree_guest("fuzz-guest", "fuzz.elf") : a.guest;
    const std::vector<std::string> inputs = list_inputs(a.inputs);
    // Every input is read and decoded before the first VM starts: a bad one
    // is reported without running anything.
    std::vector<FuzzGuestInput> decoded;
    for (const std::string& path : inputs)
        decoded.push_back(decode_fuzz_guest_input(read_file(path, "--input", 1u << 20), path));
    std::size_t failed = 0;
    for (std::size_t i = 0; i < inputs.size(); ++i) {
        std::fprintf(out, "fuzz-guest: %s: %s\n", inputs[i].c_str(), describe(decoded[i]).c_str());
        std::fflush(out);
        const int status = run_vm(fuzz_guest_run_options(decoded[i], guest, a.timeout, a.skip_shootdown));
        if (status != 0) {
            ++failed;
            std::fprintf(out, "fuzz-guest: %s FAILED with exit status %d\n", inputs[i].c_str(), status);
        }
    }
    std::fprintf(out, "fuzz-guest: %zu inputs, %zu passed, %zu failed\n", inputs.size(), inputs.size() - failed, failed);
    return failed ? 1 : 0;
}

} // namespace hv
