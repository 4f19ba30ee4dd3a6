// Fuzz target `exits`: what a guest (or a confused KVM) can hand the VMM
// without KVM in the loop. The input writes bytes into guest RAM, builds
// hypercall request blocks there (any call number, size and body, at any
// address, also past the end of RAM) and raises exits: hypercall port
// writes, and raw kvm_run pages (any exit reason, port, size, count, data
// offset, MMIO address and length) decoded by decode_exit and handed to
// dispatch_exit with the devices of a VM (serial, debug-exit) and, in shadow
// mode, an MmuPager over a small shadow MMU whose frames are guest RAM, the
// tables mirrored there as in `vmm run --paging shadow` (RAM writes land on
// them often).
// Rules: nothing crashes; guest RAM sits between guard pages (Mapping), so
// touching outside it faults; an action that stops the VM has stopped the
// StopLatch; the MMU passes its audit after every exit.
#include "devices/bus.hpp"
#include "devices/debug_exit.hpp"
#include "devices/serial16550.hpp"
#include "hv/abi.h"
#include "mmu/base/units.hpp"
#include "mmu/check/choice_source.hpp"
#include "vmm/kvm/exit_record.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/kvm/stop_latch.hpp"
#include "vmm/run/exit_dispatch.hpp"
#include "vmm/run/hypercall.hpp"
#include "vmm/shadow/mmu_pager.hpp"

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <linux/kvm.h>
#include <memory>
#include <string>
#include <vector>

namespace mmu = hv::mmu;
using mmu::ByteChoices;

namespace {

constexpr std::uint64_t kRam = 1 << 20;
using hv::mmu::kPage;
constexpr std::uint64_t kRegionPages = 16;
constexpr std::uint64_t kTablesBegin = kRam / 2, kDataBegin = kRam * 3 / 4; // the MMU's two pools
constexpr std::uint64_t kHost = 0x7f0000000000;
constexpr std::size_t kRunSize = 2 * kPage; // a kvm_run page and the page of port I/O data after it

[[noreturn]] void fail(const std::string& what) {
    std::fprintf(stderr, "fuzz exits: %s\n", what.c_str());
    std::abort();
}

struct Vm {
    hv::GuestMemory memory{kRam};
    hv::StopLatch stop;
    std::size_t serial_bytes = 0, log_lines = 0;
    hv::Serial16550 serial{[this](std::span<const std::uint8_t> b) { serial_bytes += b.size(); }};
    hv::DebugExit debug_exit{[this](std::uint32_t value) {
        stop.request(hv::StopReason::DebugExit, hv::debug_exit_status(value), "debug exit");
    }};
    hv::Bus ports{"port"}, mmio{"mmio"};
    // The MMU's frames are guest RAM, as in shadow mode: tables mirrored
    // into [kTablesBegin, kDataBegin) (writes there are the guest
    // scribbling on them, which must change nothing the MMU reads), data
    // pages above.
    mmu::FrameSpace frames{mmu::FrameSpace::Mirror{*memory.span(0, kRam)}, kTablesBegin / kPage, kDataBegin / kPage};
    mmu::FrameSpace data{*memory.span(0, kRam), kDataBegin / kPage, kRam / kPage};
    mmu::HostAddressSpace host{frames, data};
    mmu::ShadowMmu shadow{host, {mmu::LockPolicy::Rw, mmu::CoherencePolicy::Seq, 512, 2}};
    hv::MmuPager pager{shadow, host, {{HV_SHADOW_REGION_BASE, HV_SHADOW_REGION_BASE + kRegionPages * kPage}, {}, {}, {}}};
    hv::ExitContext ctx{ports, mmio, memory, stop, false, [this](std::string_view) { ++log_lines; }};

    Vm(bool shadow_mode, bool strict_io, bool strict_faults) {
        ports.add(HV_SERIAL_PORT, hv::Serial16550::size, serial, "serial0");
        ports.add(HV_DEBUG_EXIT_PORT, hv::DebugExit::size, debug_exit, "debug-exit");
        const auto sink = [this](std::string_view) { ++log_lines; };
        ports.set_unclaimed_sink(sink);
        mmio.set_unclaimed_sink(sink);
        // 12 writable pages and 4 read-only ones behind the region's one memslot.
        host.map_anonymous({kHost, kHost + 12 * kPage}, true);
        host.map_anonymous({kHost + 12 * kPage, kHost + kRegionPages * kPage}, false);
        shadow.add_memslot({1, HV_SHADOW_REGION_BASE, kRegionPages * kPage, kHost, true});
        ctx.strict_io = strict_io;
        ctx.pager = shadow_mode ? &pager : nullptr;
        ctx.strict_faults = strict_faults;
    }

    void dispatch(const hv::ExitRecord& r, const char* what) {
        const hv::ExitAction a = hv::dispatch_exit(r, ctx);
        if (a.kind == hv::ExitAction::Kind::Stop && !stop.stopped())
            fail(std::string(what) + ": the action stops the VM but the stop latch is not set");
        const std::vector<std::string> audit = shadow.audit();
        if (!audit.empty()) fail(std::string(what) + ": MMU audit after the exit: " + audit.front());
    }
};

// A guest-physical address: mostly inside RAM, sometimes straddling its end
// or far outside it, sometimes misaligned.
std::uint64_t gpa(ByteChoices& in) {
    switch (in.below(8)) {
    case 0: return in.word();
    case 1: return kRam - in.below(64);
    case 2: return kTablesBegin + in.below((kDataBegin - kTablesBegin) / 8) * 8; // the tables' mirror
    default: return in.below(kRam / 8) * 8 + (in.below(8) == 0 ? in.below(8) : 0);
    }
}

// The size hypercall `nr` requires (abi.h), or something else now and then.
std::uint32_t call_size(ByteChoices& in, std::uint32_t nr) {
    if (const std::uint64_t size = hv::hypercall_block_size(nr); size != 0 && in.below(8) != 0)
        return static_cast<std::uint32_t>(size);
    return static_cast<std::uint32_t>(in.below(4) == 0 ? in.word() : in.below(512));
}

// A value for a field of a request block: often one the handlers take.
std::uint64_t field(ByteChoices& in) {
    switch (in.below(6)) {
    case 0: return 0;
    case 1: return HV_SHADOW_REGION_BASE + in.below(kRegionPages + 2) * kPage + in.below(kPage); // the region
    case 2: return in.below(16);                                                               // ops, small counts
    case 3: return in.below(kRam);                                                             // a gpa
    default: return in.word();
    }
}

// A request block at a gpa, then the 32-bit OUT to the hypercall port.
void hypercall(Vm& vm, ByteChoices& in) {
    const std::uint64_t at = gpa(in);
    const std::uint32_t nr = static_cast<std::uint32_t>(in.below(HV_CALL_NCALLS + 2));
    const std::uint32_t size = call_size(in, nr);
    std::vector<std::uint8_t> block(std::min<std::uint32_t>(std::max<std::uint32_t>(size, 8), 512));
    const hv_call_header hdr{nr, size};
    std::memcpy(block.data(), &hdr, sizeof hdr);
    for (std::size_t off = 8; off + 8 <= block.size(); off += 8) {
        const std::uint64_t v = field(in);
        std::memcpy(block.data() + off, &v, 8);
    }
    vm.memory.write(at, block); // refused (nothing written) when it does not fit
    std::uint8_t data[4];
    const std::uint32_t port_value = static_cast<std::uint32_t>(at);
    std::memcpy(data, &port_value, 4);
    hv::ExitRecord r;
    r.kind = hv::ExitKind::Io;
    r.raw_reason = KVM_EXIT_IO;
    r.is_write = in.below(8) != 0;
    r.address = HV_HYPERCALL_PORT;
    static constexpr std::uint32_t kAccess[] = {4, 4, 4, 1, 2};
    r.size = kAccess[in.below(std::size(kAccess))];
    r.data = std::span<std::uint8_t>(data, r.size);
    vm.dispatch(r, "hypercall");
}

// A raw kvm_run: what KVM could leave there, decoded as the vCPU loop does.
void raw_exit(Vm& vm, ByteChoices& in) {
    alignas(kPage) static std::uint8_t page[kRunSize];
    std::memset(page, 0, sizeof page);
    auto& run = *reinterpret_cast<kvm_run*>(page);
    static constexpr std::uint32_t kReasons[] = {KVM_EXIT_IO,        KVM_EXIT_IO,          KVM_EXIT_MMIO,
                                                 KVM_EXIT_HLT,       KVM_EXIT_SHUTDOWN,    KVM_EXIT_INTERNAL_ERROR,
                                                 KVM_EXIT_FAIL_ENTRY, KVM_EXIT_SYSTEM_EVENT, KVM_EXIT_DEBUG};
    run.exit_reason = in.below(10) == 0 ? static_cast<std::uint32_t>(in.below(64)) : kReasons[in.below(std::size(kReasons))];
    run.s.regs.regs.rax = in.word();
    run.s.regs.regs.rip = in.word();
    run.s.regs.regs.rflags = in.below(2) ? 0x202 : in.word();
    static constexpr std::uint16_t kPorts[] = {HV_SERIAL_PORT,     HV_SERIAL_PORT + 1, HV_SERIAL_PORT + 5,
                                               HV_DEBUG_EXIT_PORT, HV_HYPERCALL_PORT,  0x80};
    switch (run.exit_reason) {
    case KVM_EXIT_IO:
        run.io.direction = in.below(2) ? KVM_EXIT_IO_OUT : KVM_EXIT_IO_IN;
        run.io.size = static_cast<std::uint8_t>(in.below(4) == 0 ? in.below(256) : 1u << in.below(3));
        run.io.port = in.below(4) == 0 ? static_cast<std::uint16_t>(in.below(65536)) : kPorts[in.below(std::size(kPorts))];
        run.io.count = static_cast<std::uint32_t>(in.below(4) == 0 ? in.word() : 1 + in.below(8));
        run.io.data_offset = in.below(4) == 0 ? in.word() : kPage + in.below(64);
        break;
    case KVM_EXIT_MMIO:
        run.mmio.phys_addr = in.below(2) ? 0xfee00000 + in.below(kPage) : in.word();
        run.mmio.len = static_cast<std::uint32_t>(in.below(4) == 0 ? in.word() : 1u << in.below(4));
        run.mmio.is_write = static_cast<std::uint8_t>(in.below(2));
        break;
    case KVM_EXIT_INTERNAL_ERROR: run.internal.suberror = static_cast<std::uint32_t>(in.word()); break;
    case KVM_EXIT_FAIL_ENTRY: run.fail_entry.hardware_entry_failure_reason = in.word(); break;
    case KVM_EXIT_SYSTEM_EVENT: run.system_event.type = static_cast<std::uint32_t>(in.below(8)); break;
    default: break;
    }
    // Data bytes wherever the I/O data may be.
    for (std::size_t i = 0; i < 16; ++i) page[kPage + in.below(128)] = static_cast<std::uint8_t>(in.below(256));
    const hv::ExitRecord r = hv::decode_exit(run, sizeof page, static_cast<std::uint32_t>(in.below(2)));
    if (!r.data.empty() && (r.data.data() < page || r.data.data() + r.data.size() > page + sizeof page))
        fail("decode_exit: data outside the kvm_run mapping");
    vm.dispatch(r, "raw exit");
}

void write_ram(Vm& vm, ByteChoices& in) {
    const std::uint64_t at = gpa(in);
    std::uint8_t bytes[64];
    // The first 0..64 bytes, filled through a span of exactly that many: an
    // index loop bounded by n made g++ 12 at -O3 report a 16-byte store past
    // the array (-Wstringop-overflow, a false positive of its vectorizer).
    const std::span<std::uint8_t> data(bytes, in.below(sizeof bytes + 1));
    for (std::uint8_t& b : data) b = static_cast<std::uint8_t>(in.below(256));
    vm.memory.write(at, std::span<const std::uint8_t>(data));
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    ByteChoices in({data, size});
    const unsigned mode = static_cast<unsigned>(in.below(8));
    Vm vm(mode & 1, mode & 2, mode & 4);
    for (int step = 0; step < 64 && !in.exhausted(); ++step) {
        switch (in.below(4)) {
        case 0: write_ram(vm, in); break;
        case 1: raw_exit(vm, in); break;
        default: hypercall(vm, in); break;
        }
    }
    return 0;
}
