#pragma once
// What the VMM does about one vCPU exit: a plain function over an
// ExitRecord and the VM's devices, with no KVM calls, so unit tests and
// fuzzers drive it with synthetic exits.
#include "vmm/kvm/exit_record.hpp"
#include "vmm/kvm/guest_log.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/kvm/stop_latch.hpp"
#include "vmm/run/hypercall.hpp"

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

namespace hv {

class Bus;

struct ExitContext {
    Bus& ports;
    Bus& mmio;
    GuestMemory& memory;
    StopLatch& stop;
    bool strict_io = false;
    // One line per notable guest event (reported exceptions, ignored accesses).
    std::function<void(std::string_view)> log;
    // Shadow paging (nullptr in identity mode): what serves the page-fault,
    // host-op and verify hypercalls.
    ShadowPager* pager = nullptr;
    bool strict_faults = false;
    // Where the lines a guest can repeat at will (its exception reports) go
    // through `log`: the first few of each kind, then a count. A VM shares
    // one among its vCPUs' contexts and calls finish() when the run ends;
    // left empty, dispatch_exit makes one for this context on first use,
    // which prints its count when the context is destroyed.
    std::shared_ptr<GuestLog> guest_log = nullptr;
};

struct ExitAction {
    enum class Kind {
        Resume,  // re-enter the guest
        Park,    // HLT with interrupts on: wait until something wakes the vCPU (or the VM ends)
        Halted,  // HLT with interrupts off: this vCPU is done
        Stop,    // the VM ends: `stop` in the context has been requested
    };
    Kind kind = Kind::Resume;
    std::optional<std::uint64_t> set_rax; // written back through the synced registers
    bool crash_report = false;            // print registers and disassembly for this vCPU
    std::optional<hv_call_exception> guest_frame; // registers the guest reported, if any
};

ExitAction dispatch_exit(const ExitRecord& exit, ExitContext& ctx);

} // namespace hv
