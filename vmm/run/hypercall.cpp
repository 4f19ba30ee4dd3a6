#include "vmm/run/hypercall.hpp"

#include "vmm/kvm/text_format.hpp"
#include <sched.h>
#include "vmm/shadow/shadow_pager.hpp"

#include <algorithm>
#include <cstring>

namespace hv {

namespace {

constexpr std::uint64_t kAddressLimit = 1ull << 47;

// The block size of each call; 0 for an unknown call number.
std::uint64_t call_size(std::uint32_t nr) {
    switch (nr) {
    case HV_CALL_ECHO: return sizeof(hv_call_echo);
    case HV_CALL_EXCEPTION: return sizeof(hv_call_exception);
    case HV_CALL_PAGE_FAULT: return sizeof(hv_call_page_fault);
    case HV_CALL_HOST_OP: return sizeof(hv_call_host_op);
    case HV_CALL_VERIFY: return sizeof(hv_call_verify);
    case HV_CALL_YIELD: return sizeof(hv_call_yield);
    default: return 0;
    }
}

const char* status_name(std::uint32_t status) {
    switch (status) {
    case HV_E_NO_MEMSLOT: return "the address is outside every memslot";
    case HV_E_REFUSED: return "the host mapping refuses the access";
    case HV_E_NO_MEMORY: return "no frame left for a page or a table";
    case HV_E_BAD_ARG: return "bad argument";
    default: return "unexpected status";
    }
}

HypercallResult page_fault_call(GuestMemory& memory, std::uint64_t gpa, const HypercallContext& ctx) {
    const auto call = memory.read_obj<hv_call_page_fault>(gpa);
    if (!call) return {HV_E_FAULT, std::nullopt, {}};
    if (call->reserved != 0 || (call->error_code & ~HV_PF_KNOWN_BITS) != 0 || call->address >= kAddressLimit)
        return {HV_E_BAD_ARG, std::nullopt, {}};
    if (!ctx.pager) return {HV_E_NOT_SHADOW, std::nullopt, {}};
    const std::uint32_t status = ctx.pager->page_fault(ctx.vcpu, call->address, call->error_code);
    if (status == HV_OK || !ctx.strict_faults) return {status, std::nullopt, {}};
    // --strict-faults: the crash report shows the faulting context the
    // guest's handler passed, not the handler's own registers.
    hv_call_exception frame{};
    frame.vector = 14;
    frame.error_code = call->error_code;
    frame.rip = call->rip;
    frame.rsp = call->rsp;
    frame.rflags = call->rflags;
    frame.cr2 = call->address;
    frame.cs = HV_GDT_CODE64;
    frame.ss = HV_GDT_DATA;
    static_assert(sizeof frame.gprs == sizeof call->gprs);
    std::memcpy(frame.gprs, call->gprs, sizeof frame.gprs);
    return {status, frame,
            "--strict-faults: page fault at " + hex(call->address) + " (error code " + hex(call->error_code) +
                ", rip " + hex(call->rip) + ") not resolved: " + status_name(status)};
}

std::uint32_t verify_call(GuestMemory& memory, std::uint64_t gpa, const HypercallContext& ctx) {
    auto call = memory.read_obj<hv_call_verify>(gpa);
    if (!call) return HV_E_FAULT;
    if (call->count > HV_VERIFY_MAX || call->guest_lost > HV_VERIFY_MAX) return HV_E_BAD_ARG;
    const std::uint64_t bytes = call->count * sizeof(hv_stamp);
    if (!memory.contains(call->table, bytes)) return HV_E_FAULT;
    // Before anything is allocated: identity mode has nothing to check, and
    // a guest calling this in a loop on every vCPU must cost the VMM nothing.
    if (!ctx.pager) return HV_E_NOT_SHADOW;
    if (!ctx.pager->block_allowed(call->table, bytes)) return HV_E_FAULT;
    const std::uint32_t status =
        ctx.pager->verify_table(memory, call->table, call->count, call->guest_lost, call->lost, call->checked);
    if (status == HV_E_BUSY) return status; // nothing was checked: the block stays as the guest left it
    if (!memory.write_obj(gpa, *call)) return HV_E_FAULT;
    return status;
}

std::uint32_t host_op_call(GuestMemory& memory, std::uint64_t gpa, const HypercallContext& ctx) {
    auto call = memory.read_obj<hv_call_host_op>(gpa);
    if (!call) return HV_E_FAULT;
    if (call->reserved != 0 || call->op >= HV_HOST_NOPS || call->address >= kAddressLimit ||
        call->address2 >= kAddressLimit || (call->op != HV_HOST_MERGE && call->address2 != 0))
        return HV_E_BAD_ARG;
    if (!ctx.pager) return HV_E_NOT_SHADOW;
    bool changed = false;
    const std::uint32_t status = ctx.pager->host_op(call->op, call->address, call->address2, changed);
    call->changed = changed ? 1 : 0;
    if (!memory.write_obj(gpa, *call)) return HV_E_FAULT;
    return status;
}

} // namespace

HypercallResult handle_hypercall(GuestMemory& memory, std::uint64_t block_gpa, const HypercallContext& context) {
    const auto header = memory.read_obj<hv_call_header>(block_gpa);
    if (!header) return {HV_E_FAULT, std::nullopt, {}};
    const std::uint64_t size = call_size(header->nr);
    if (size == 0) return {HV_E_UNKNOWN_CALL, std::nullopt, {}};
    if (header->size != size) return {HV_E_BAD_SIZE, std::nullopt, {}};
    if (context.pager && !context.pager->block_allowed(block_gpa, size)) return {HV_E_FAULT, std::nullopt, {}};
    switch (header->nr) {
    case HV_CALL_ECHO: {
        auto call = memory.read_obj<hv_call_echo>(block_gpa);
        if (!call) return {HV_E_FAULT, std::nullopt, {}};
        call->out = call->in + 1;
        if (!memory.write_obj(block_gpa, *call)) return {HV_E_FAULT, std::nullopt, {}};
        return {HV_OK, std::nullopt, {}};
    }
    case HV_CALL_EXCEPTION: {
        auto call = memory.read_obj<hv_call_exception>(block_gpa);
        if (!call) return {HV_E_FAULT, std::nullopt, {}};
        return {HV_OK, *call, {}};
    }
    case HV_CALL_PAGE_FAULT:
        return page_fault_call(memory, block_gpa, context);
    case HV_CALL_HOST_OP:
        return {host_op_call(memory, block_gpa, context), std::nullopt, {}};
    case HV_CALL_VERIFY:
        return {verify_call(memory, block_gpa, context), std::nullopt, {}};
    case HV_CALL_YIELD:
        sched_yield();
        return {HV_OK, std::nullopt, {}};
    default: return {HV_E_UNKNOWN_CALL, std::nullopt, {}};
    }
}

GuestLog::~GuestLog() {
    try {
        finish();
    } catch (...) {
        // A sink that throws while the VM is torn down loses the summary, nothing else.
    }
}

GuestLog::Kind& GuestLog::kind_locked(std::string_view name) {
    for (Kind& k : kinds_)
        if (k.name == name) return k;
    return kinds_.emplace_back(Kind{std::string(name)});
}

bool GuestLog::admit(std::string_view kind) {
    std::lock_guard lock(mutex_);
    return kind_locked(kind).seen++ < listed_;
}

void GuestLog::print(std::string_view kind, std::string_view line) {
    if (admit(kind) && sink_) sink_(line);
}

void GuestLog::finish() {
    std::vector<std::string> lines;
    {
        std::lock_guard lock(mutex_);
        for (Kind& k : kinds_) {
            const std::uint64_t suppressed = k.seen > listed_ ? k.seen - listed_ : 0;
            if (suppressed == k.summarized) continue;
            lines.push_back("... and " + std::to_string(suppressed - k.summarized) + " more " + k.name + " (suppressed)");
            k.summarized = suppressed;
        }
    }
    if (sink_)
        for (const auto& line : lines) sink_(line);
}

std::uint64_t GuestLog::suppressed(std::string_view kind) const {
    std::lock_guard lock(mutex_);
    for (const Kind& k : kinds_)
        if (k.name == kind) return k.seen > listed_ ? k.seen - listed_ : 0;
    return 0;
}

const char* exception_mnemonic(std::uint64_t vector) {
    static constexpr const char* names[32] = {
        "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#CSO", "#TS", "#NP", "#SS", "#GP", "#PF", "#15",
        "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "#22", "#23", "#24", "#25", "#26", "#27", "#HV", "#VC", "#SX", "#31"};
    return vector < 32 ? names[vector] : "#?";
}

std::string describe_exception(const hv_call_exception& e) {
    std::string s = std::string("guest exception ") + exception_mnemonic(e.vector) + " (vector " +
                    std::to_string(e.vector) + ") error_code=" + hex(e.error_code) + " rip=" + hex(e.rip);
    if (e.vector == 14) s += " cr2=" + hex(e.cr2);
    return s;
}

} // namespace hv
