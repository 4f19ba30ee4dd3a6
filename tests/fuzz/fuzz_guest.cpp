// Fuzz target `guest`: an input runs as `vmm fuzz-guest --input FILE` runs
// it (vmm/cli/fuzz_guest_command.hpp): 4 bytes of configuration (vCPUs,
// policies, batch) and a program for the fuzz guest (guest/fuzz.c), under
// KVM in shadow mode, in this process. The oracle is the run's exit status:
// the guest's read-back of its stamps, the VMM's read of every stamp
// through the host tables (HV_CALL_VERIFY) and the MMU audit after the run
// all passed. A failure prints the configuration and the status and aborts.
//
// It needs KVM with EPT/NPT (shadow mode): scripts/fuzz.sh guest runs it in
// the nested KVM host when this machine has none. Not linked for replay in
// normal builds: the committed corpus runs as the kvm test
// kvm.fuzz-guest.corpus through `vmm fuzz-guest`.
#include "vmm/cli/fuzz_guest_command.hpp"
#include "vmm/kvm/file_util.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <string>

namespace {

// guest/fuzz.elf of the build tree this binary is in (bin/..).
const std::string& guest_image() {
    static const std::string path = [] {
        try {
            return hv::build_tree_guest("fuzz guest", "fuzz.elf");
        } catch (const std::exception& e) {
            std::fprintf(stderr, "%s\n", e.what());
            std::exit(2);
        }
    }();
    return path;
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size > hv::FuzzGuestInput::kMaxInput) return -1; // not an input: libFuzzer keeps none this long
    const hv::FuzzGuestInput in = hv::decode_fuzz_guest_input({data, size}, "input");
    hv::RunOptions opt = hv::fuzz_guest_run_options(in, guest_image(), 120);
    opt.serial_file = "/dev/null"; // the guest's lines: replay with `vmm fuzz-guest --input FILE`
    int status;
    try {
        status = hv::run_vm(opt);
    } catch (const std::exception& e) { // no VM at all (no KVM, no image): not a finding
        std::fprintf(stderr, "fuzz guest: cannot run the VM: %s\n", e.what());
        std::exit(2);
    }
    if (status != 0) {
        std::fprintf(stderr,
                     "fuzz guest: %s: vmm run exited %d (1: the guest or the VMM found lost writes; 124: timeout; "
                     "125: audit or VMM error; 126: guest crash); replay with vmm fuzz-guest --input FILE\n",
                     hv::describe(in).c_str(), status);
        std::abort();
    }
    return 0;
}
