#include "vmm/run/hypercall.hpp"

#include "vmm/kvm/text_format.hpp"
#include "vmm/shadow/shadow_pager.hpp"

#include <sched.h>

#include <algorithm>
#include <cstring>
#include <iterator>

namespace hv {

namespace {

constexpr std::uint64_t kAddressLimit = 1ull << 47;

HypercallResult answer(std::uint32_t status) {
    HypercallResult r;
    r.status = status;
    return r;
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

// Each handler runs once the header named its call, the size matched and
// the pager (if any) allowed the block; it reads the block itself.

HypercallResult echo_call(GuestMemory& memory, std::uint64_t gpa, const HypercallContext&) {
    auto call = memory.read_obj<hv_call_echo>(gpa);
    if (!call) return answer(HV_E_FAULT);
    call->out = call->in + 1;
    if (!memory.write_obj(gpa, *call)) return answer(HV_E_FAULT);
    return answer(HV_OK);
}

HypercallResult exception_call(GuestMemory& memory, std::uint64_t gpa, const HypercallContext&) {
    const auto call = memory.read_obj<hv_call_exception>(gpa);
    if (!call) return answer(HV_E_FAULT);
    HypercallResult r;
    r.exception = *call;
    return r;
}

HypercallResult yield_call(GuestMemory&, std::uint64_t, const HypercallContext&) {
    sched_yield();
    return answer(HV_OK);
}

HypercallResult page_fault_call(GuestMemory& memory, std::uint64_t gpa, const HypercallContext& ctx) {
    const auto call = memory.read_obj<hv_call_page_fault>(gpa);
    if (!call) return answer(HV_E_FAULT);
    if (call->reserved != 0 || (call->error_code & ~HV_PF_KNOWN_BITS) != 0 || call->address >= kAddressLimit)
        return answer(HV_E_BAD_ARG);
    if (!ctx.pager) return answer(HV_E_NOT_SHADOW);
    const std::uint32_t status = ctx.pager->page_fault(ctx.vcpu, call->address, call->error_code);
    if (status == HV_OK || !ctx.strict_faults) return answer(status);
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

HypercallResult host_op_call(GuestMemory& memory, std::uint64_t gpa, const HypercallContext& ctx) {
    auto call = memory.read_obj<hv_call_host_op>(gpa);
    if (!call) return answer(HV_E_FAULT);
    if (call->reserved != 0 || call->op >= HV_HOST_NOPS || call->address >= kAddressLimit ||
        call->address2 >= kAddressLimit || (call->op != HV_HOST_MERGE && call->address2 != 0))
        return answer(HV_E_BAD_ARG);
    if (!ctx.pager) return answer(HV_E_NOT_SHADOW);
    bool changed = false;
    const std::uint32_t status = ctx.pager->host_op(call->op, call->address, call->address2, changed);
    call->changed = changed ? 1 : 0;
    if (!memory.write_obj(gpa, *call)) return answer(HV_E_FAULT);
    return answer(status);
}

HypercallResult verify_call(GuestMemory& memory, std::uint64_t gpa, const HypercallContext& ctx) {
    auto call = memory.read_obj<hv_call_verify>(gpa);
    if (!call) return answer(HV_E_FAULT);
    if (call->count > HV_VERIFY_MAX || call->guest_lost > HV_VERIFY_MAX) return answer(HV_E_BAD_ARG);
    const std::uint64_t bytes = call->count * sizeof(hv_stamp);
    if (!memory.contains(call->table, bytes)) return answer(HV_E_FAULT);
    // Before anything is allocated: identity mode has nothing to check, and
    // a guest calling this in a loop on every vCPU must cost the VMM nothing.
    if (!ctx.pager) return answer(HV_E_NOT_SHADOW);
    if (!ctx.pager->block_allowed(call->table, bytes)) return answer(HV_E_FAULT);
    const std::uint32_t status =
        ctx.pager->verify_table(memory, call->table, call->count, call->guest_lost, call->lost, call->checked);
    if (status == HV_E_BUSY) return answer(status); // nothing was checked: the block stays as the guest left it
    if (!memory.write_obj(gpa, *call)) return answer(HV_E_FAULT);
    return answer(status);
}

// Every call the port serves. Adding a call is adding its row.
struct Hypercall {
    std::uint32_t nr;
    std::uint64_t block_size;
    HypercallResult (*handle)(GuestMemory& memory, std::uint64_t gpa, const HypercallContext& ctx);
};

constexpr Hypercall kHypercalls[] = {
    {HV_CALL_ECHO, sizeof(hv_call_echo), echo_call},
    {HV_CALL_EXCEPTION, sizeof(hv_call_exception), exception_call},
    {HV_CALL_PAGE_FAULT, sizeof(hv_call_page_fault), page_fault_call},
    {HV_CALL_HOST_OP, sizeof(hv_call_host_op), host_op_call},
    {HV_CALL_VERIFY, sizeof(hv_call_verify), verify_call},
    {HV_CALL_YIELD, sizeof(hv_call_yield), yield_call},
};

const Hypercall* find_hypercall(std::uint32_t nr) {
    const auto it = std::find_if(std::begin(kHypercalls), std::end(kHypercalls),
                                 [nr](const Hypercall& c) { return c.nr == nr; });
    return it == std::end(kHypercalls) ? nullptr : it;
}

} // namespace

std::uint64_t hypercall_block_size(std::uint32_t nr) {
    const Hypercall* call = find_hypercall(nr);
    return call ? call->block_size : 0;
}

HypercallResult handle_hypercall(GuestMemory& memory, std::uint64_t block_gpa, const HypercallContext& context) {
    const auto header = memory.read_obj<hv_call_header>(block_gpa);
    if (!header) return answer(HV_E_FAULT);
    const Hypercall* call = find_hypercall(header->nr);
    if (!call) return answer(HV_E_UNKNOWN_CALL);
    if (header->size != call->block_size) return answer(HV_E_BAD_SIZE);
    if (context.pager && !context.pager->block_allowed(block_gpa, call->block_size)) return answer(HV_E_FAULT);
    return call->handle(memory, block_gpa, context);
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
