// Fuzz target `schedule`: races of the fault/invalidate protocol, one
// interleaving per input, chosen by the input and replayed exactly.
//
// One or two host threads run host operations (unmap, protect, migrate,
// merge, swap-out, aging, host faults) and the shadow MMU's own zaps; one
// to three software vCPUs (SoftVcpuSystem: a TLB each, the shootdown
// protocol, stamps in their slots of each page) read and write a 24-page
// region that straddles a leaf table boundary. PctScheduler takes control
// of each thread at the MMU's scheduling points (sched_point.hpp) and runs
// the threads one at a time: the input gives their priorities, the change
// points and which bounded waits (a shootdown waiting for an
// acknowledgement) give up at once.
//
// The oracle, after the threads end: no vCPU used a translation whose
// flush was never requested (violations), no stamp was lost or misdirected
// (during the run and in a final read-back), ShadowMmu::audit() (every
// entry agrees with the memslot and the host tables, rmap exact) and
// SoftVcpuSystem::audit_tlbs(); also no deadlock, no livelock (step limit)
// and no exception. A failure prints the configuration, the programs and
// the schedule's last switches, then aborts.
//
// With HV_SCHEDULE_REPLAY_CHECK set (the corpus replay test sets it) every
// input runs twice and must give the same trace digest: the replay of a
// saved input is the same interleaving.
//
// The vCPUs' TLBs follow either model of soft_vcpu.hpp (the input picks):
// Recheck catches a stale entry at its first use (a violation); Hardware
// uses it, and the stamps and the TLB audit find what that did.
//
// Input layout: 4 bytes of configuration (lock, coherence, batch; shape:
// page-at-a-time, vCPUs, host threads, TLB model), 5 priority bytes, 4
// change points of 2 bytes, 4 bytes of timeout bits, then each thread's
// program (ByteChoices): a count, then the operations. A change point is
// none (0), a step number (below 0x4000: programs take a few hundred steps)
// or a kind point (from 0x4000: the first byte's low 6 bits pick the point
// kind, the second's low 3 bits the occurrence, 1 to 7, or 0 for every
// step there), which names a place like "the first invalidate-sequenced"
// or "whoever reaches fault-install" whatever ran before; the slot order
// is the PCT rank (pct_scheduler.hpp). Most change points are kind points,
// and early occurrences, because a window between two protocol steps is
// what they are for.
#include "mmu/check/choice_source.hpp"
#include "mmu/base/units.hpp"
#include "mmu/check/pct_scheduler.hpp"
#include "mmu/soft/soft_vcpu.hpp"

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

using namespace hv::mmu;

namespace {
constexpr std::uint64_t kPages = 24;
// Pages 0-7 and 8-23 lie in different leaf tables (host and shadow), and
// page 8 starts a 2 MiB boundary: zap batches and table-at-a-time locking
// both meet an edge inside the region.
constexpr std::uint64_t kGuestBase = 0x40000000 - 8 * kPage;
constexpr std::uint64_t kHostBase = 0x7f0000000000 - 8 * kPage;
constexpr std::size_t kFrames = 1024;
constexpr std::uint64_t kMaxOps = 12; // per thread
constexpr std::uint64_t kMaxSteps = 100000;
constexpr LockPolicy kLocks[] = {LockPolicy::Global, LockPolicy::Rw, LockPolicy::Split};
constexpr CoherencePolicy kCoherences[] = {CoherencePolicy::Seq, CoherencePolicy::PtLock, CoherencePolicy::RangeActive};
constexpr std::size_t kBatches[] = {1, 2, 3, 64, 512, 0}; // 0: unlimited

// The points a kind change point can name: every step between protocol
// steps (sched_point.hpp), not the start, the end or a wait.
constexpr sched::Point kStepKinds[] = {
    sched::Point::FaultSequenceRead, sched::Point::FaultSnapshot,     sched::Point::FaultInstall,
    sched::Point::InstallRegistered, sched::Point::InstallPublished,  sched::Point::WalkRegistered,
    sched::Point::InvalidateBegun,   sched::Point::ZapEntryCleared,   sched::Point::ZapMasksRead,
    sched::Point::ZapBatchCleared,   sched::Point::ZapBatchDone,      sched::Point::InvalidateSequenced,
    sched::Point::MemslotRetired,    sched::Point::InvalidateStarted, sched::Point::HostPtesChanged,
    sched::Point::ShootdownPosted,   sched::Point::VcpuAnnounced,     sched::Point::TlbEntriesDropped,
    sched::Point::AccessAttempt,     sched::Point::AccessTranslated,  sched::Point::Program};

enum class HostOp : std::uint8_t { Unmap, Protect, Migrate, Merge, SwapOut, Age, ZapGuest, ZapFrame, HostRead, N };
enum class VcpuOp : std::uint8_t { Read, Write, Exit, N };

struct Op {
    std::uint8_t kind;
    std::uint64_t a = 0, b = 0; // pages, counts
    bool flag = false;
};

struct Program {
    bool host;
    std::uint32_t vcpu = 0; // for vCPU programs
    std::vector<Op> ops;
};

std::string describe(const Op& op, bool host) {
    const std::string a = std::to_string(op.a), b = std::to_string(op.b);
    if (!host) {
        switch (static_cast<VcpuOp>(op.kind)) {
        case VcpuOp::Read: return "read " + a;
        case VcpuOp::Write: return "write " + a;
        case VcpuOp::Exit: return "exit";
        case VcpuOp::N: break;
        }
        return "?";
    }
    switch (static_cast<HostOp>(op.kind)) {
    case HostOp::Unmap: return "unmap " + a + "+" + b;
    case HostOp::Protect: return std::string(op.flag ? "protect-rw " : "protect-ro ") + a + "+" + b;
    case HostOp::Migrate: return "migrate " + a;
    case HostOp::Merge: return "merge " + a + " " + b;
    case HostOp::SwapOut: return "swap-out " + a;
    case HostOp::Age: return "age " + a + "+" + b;
    case HostOp::ZapGuest: return "zap-guest " + a + "+" + b;
    case HostOp::ZapFrame: return "zap-frame-of " + a;
    case HostOp::HostRead: return "host-read " + a;
    case HostOp::N: break;
    }
    return "?";
}

Program decode(ByteChoices& in, bool host, std::uint32_t vcpu) {
    Program p{host, vcpu, {}};
    const std::uint64_t n = in.below(kMaxOps + 1);
    for (std::uint64_t i = 0; i < n && !in.exhausted(); ++i) {
        Op op{static_cast<std::uint8_t>(in.below(host ? std::size_t(HostOp::N) : std::size_t(VcpuOp::N)))};
        op.a = in.below(kPages);
        op.b = 1 + in.below(4);
        if (host && static_cast<HostOp>(op.kind) == HostOp::Merge) op.b = in.below(kPages);
        if (host && op.a + op.b > kPages && static_cast<HostOp>(op.kind) != HostOp::Merge) op.b = kPages - op.a;
        op.flag = in.below(2) == 1;
        p.ops.push_back(op);
    }
    return p;
}

struct Rig {
    SoftFrames frames{kFrames, 128};
    HostAddressSpace host;
    SoftVcpuSystem system;
    ShadowMmu mmu;
    Rig(const ShadowConfig& c, bool page_at_a_time, std::uint32_t vcpus, TlbModel model)
        : host(frames.tables, frames.data, page_at_a_time), system(host, vcpus, TlbConfig{8, 2, model}),
          mmu(host, c, &system) {
        host.map_anonymous({kHostBase, kHostBase + kPages * kPage}, true);
        mmu.add_memslot({1, kGuestBase, kPages * kPage, kHostBase, true});
        system.attach(mmu, kGuestBase, kHostBase, kPages);
    }
};

void run_host(Rig& rig, const Program& p) {
    const auto ha = [](std::uint64_t page) { return kHostBase + page * kPage; };
    for (const Op& op : p.ops) {
        sched::point(sched::Point::Program);
        const HostRange range{ha(op.a), ha(op.a + op.b)};
        switch (static_cast<HostOp>(op.kind)) {
        case HostOp::Unmap: rig.system.unmap_pages(op.a, op.b); break;
        case HostOp::Protect: rig.host.protect(range, op.flag); break;
        case HostOp::Migrate: rig.host.migrate(ha(op.a)); break;
        case HostOp::Merge: rig.host.merge(ha(op.a), ha(op.b)); break;
        case HostOp::SwapOut: rig.host.swap_out(ha(op.a)); break;
        case HostOp::Age: rig.host.age(range); break;
        case HostOp::ZapGuest: rig.mmu.zap_guest_range(kGuestBase + op.a * kPage, kGuestBase + (op.a + op.b) * kPage); break;
        case HostOp::ZapFrame:
            if (const auto t = rig.host.lookup(ha(op.a))) rig.mmu.zap_frame(t->pfn);
            break;
        case HostOp::HostRead: rig.host.fault(ha(op.a), Access::Read); break;
        case HostOp::N: break;
        }
    }
}

void run_vcpu(Rig& rig, const Program& p) {
    const std::uint32_t v = p.vcpu;
    rig.system.enter(v);
    for (const Op& op : p.ops) {
        sched::point(sched::Point::Program);
        switch (static_cast<VcpuOp>(op.kind)) {
        case VcpuOp::Read: rig.system.access(v, op.a, Access::Read); break;
        case VcpuOp::Write: rig.system.access(v, op.a, Access::Write); break;
        case VcpuOp::Exit:
            // A VM exit: outside (shootdowns leave requests, not waits) for one step.
            rig.system.leave(v);
            sched::point(sched::Point::Program);
            rig.system.enter(v);
            break;
        case VcpuOp::N: break;
        }
    }
    rig.system.leave(v);
}

struct Outcome {
    PctResult schedule;
    std::vector<std::string> problems;
    std::string setup; // configuration and programs, for reports
    std::vector<PctThread> threads;
};

Outcome run_once(const std::uint8_t* data, std::size_t size) {
    ByteChoices in({data, size});
    ShadowConfig c;
    c.lock = kLocks[in.below(std::size(kLocks))];
    c.coherence = kCoherences[in.below(std::size(kCoherences))];
    c.batch = kBatches[in.below(std::size(kBatches))];
    const std::uint64_t shape = in.below(256);
    const bool page_at_a_time = shape & 1;
    const std::uint32_t vcpus = 1 + static_cast<std::uint32_t>((shape >> 1) % 3);
    const std::uint32_t hosts = 1 + static_cast<std::uint32_t>((shape >> 3) & 1);
    const TlbModel tlb_model = (shape >> 4) & 1 ? TlbModel::Hardware : TlbModel::Recheck;
    c.vcpus = vcpus;

    PctConfig pct;
    std::int64_t priority[5];
    for (std::int64_t& p : priority) p = static_cast<std::int64_t>(in.below(256));
    for (int i = 0; i < 4; ++i) {
        const std::uint64_t hi = in.below(256), lo = in.below(256);
        if (hi >= 0x40) // a kind point: every step (0) or the 1st..7th step at one of the step kinds
            pct.change_points.push_back({lo % 8, kStepKinds[(hi & 0x3f) % std::size(kStepKinds)]});
        else if (const std::uint64_t step = hi << 8 | lo)
            pct.change_points.push_back({step});
    }
    for (int i = 0; i < 4; ++i) pct.timeouts = pct.timeouts << 8 | static_cast<std::uint32_t>(in.below(256));
    pct.max_steps = kMaxSteps;
    pct.watchdog = std::chrono::milliseconds(10000);

    std::vector<Program> programs;
    for (std::uint32_t h = 0; h < hosts; ++h) programs.push_back(decode(in, true, 0));
    for (std::uint32_t v = 0; v < vcpus; ++v) programs.push_back(decode(in, false, v));

    Outcome out;
    out.setup = std::string(to_string(c.lock)) + "/" + to_string(c.coherence) + "/batch " + std::to_string(c.batch) +
                "/" + (page_at_a_time ? "page-at-a-time" : "range") + "/tlb " + to_string(tlb_model) + ", " +
                std::to_string(hosts) + " host and " + std::to_string(vcpus) + " vCPU threads\n";
    Rig rig(c, page_at_a_time, vcpus, tlb_model);
    for (std::size_t i = 0; i < programs.size(); ++i) {
        const Program& p = programs[i];
        const std::string name = p.host ? "host" + std::to_string(i) : "vcpu" + std::to_string(p.vcpu);
        pct.priorities.push_back(priority[i]);
        out.setup += "  " + name + " (priority " + std::to_string(priority[i]) + "):";
        for (const Op& op : p.ops) out.setup += " " + describe(op, p.host) + ";";
        out.setup += "\n";
        out.threads.push_back({name, p.host ? std::function<void()>([&rig, &p] { run_host(rig, p); })
                                            : std::function<void()>([&rig, &p] { run_vcpu(rig, p); })});
    }
    std::string points;
    for (const PctChangePoint& p : pct.change_points)
        points += p.kind == sched::Point::Count ? " " + std::to_string(p.step)
                                                : std::string(" ") + sched::to_string(p.kind) + "#" +
                                                      (p.step ? std::to_string(p.step) : std::string("every"));
    out.setup += "  change points:" + (points.empty() ? std::string(" none") : points) + "; timeout bits 0x";
    char bits[16];
    std::snprintf(bits, sizeof bits, "%08x\n", pct.timeouts);
    out.setup += bits;

    PctScheduler scheduler(pct);
    // Once the threads run freely (a deadlock, the step limit), an access
    // that a broken protocol keeps refaulting must give up so the run ends.
    scheduler.on_lost_control = [&rig](const std::string&) { rig.system.stop_accesses(); };
    out.schedule = scheduler.run(out.threads);

    const PctResult& r = out.schedule;
    if (!r.lost_control.empty()) out.problems.push_back("the scheduler lost control: " + r.lost_control);
    for (const std::string& e : r.errors) out.problems.push_back("exception: " + e);
    for (std::uint32_t v = 0; v < vcpus; ++v) {
        const SoftVcpuCounters vc = rig.system.vcpu_counters(v);
        if (vc.violations || vc.lost_writes)
            out.problems.push_back("vCPU " + std::to_string(v) + ": " + std::to_string(vc.violations) +
                                   " violations, " + std::to_string(vc.lost_writes) + " lost writes");
    }
    for (std::string& a : rig.mmu.audit()) out.problems.push_back("audit: " + a);
    for (std::string& a : rig.system.audit_tlbs(vcpus)) out.problems.push_back("TLB audit: " + a);
    if (const std::uint64_t lost = rig.system.verify_stamps(vcpus))
        out.problems.push_back("final read-back: " + std::to_string(lost) + " stamps lost or misdirected");
    // The first few of those in detail (the run's, then the read-back's).
    for (std::string& d : rig.system.details()) out.problems.push_back(std::move(d));
    return out;
}

[[noreturn]] void fail(const Outcome& o, const std::string& what) {
    std::fprintf(stderr, "fuzz schedule: %s\n%sschedule: %s", what.c_str(), o.setup.c_str(),
                 o.schedule.describe(o.threads).c_str());
    for (const std::string& p : o.problems) std::fprintf(stderr, "  %s\n", p.c_str());
    std::abort();
}

} // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    const Outcome first = run_once(data, size);
    if (!first.problems.empty()) fail(first, "the protocol failed under this interleaving");
    if (std::getenv("HV_SCHEDULE_REPLAY_CHECK")) {
        const Outcome again = run_once(data, size);
        if (again.schedule.digest != first.schedule.digest || again.schedule.steps != first.schedule.steps)
            fail(again, "the second run of the input took another interleaving (digest " +
                            std::to_string(first.schedule.digest) + ", " + std::to_string(first.schedule.steps) +
                            " steps the first time)");
    }
    return 0;
}
