#include "hypercall.hpp"

#include "format.hpp"
#include "shadow_pager.hpp"

namespace hv {

namespace {

constexpr std::uint64_t kAddressLimit = 1ull << 47;

std::uint32_t page_fault_call(GuestMemory& memory, std::uint64_t gpa, const HypercallContext& ctx) {
    const auto call = memory.read_obj<hv_call_page_fault>(gpa);
    if (!call) return HV_E_FAULT;
    if (call->reserved != 0 || (call->error_code & ~HV_PF_KNOWN_BITS) != 0 || call->address >= kAddressLimit)
        return HV_E_BAD_ARG;
    if (!ctx.pager) return HV_E_NOT_SHADOW;
    return ctx.pager->page_fault(ctx.vcpu, call->address, call->error_code);
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
    if (!header) return {HV_E_FAULT, std::nullopt};
    switch (header->nr) {
    case HV_CALL_ECHO: {
        if (header->size != sizeof(hv_call_echo)) return {HV_E_BAD_SIZE, std::nullopt};
        auto call = memory.read_obj<hv_call_echo>(block_gpa);
        if (!call) return {HV_E_FAULT, std::nullopt};
        call->out = call->in + 1;
        if (!memory.write_obj(block_gpa, *call)) return {HV_E_FAULT, std::nullopt};
        return {HV_OK, std::nullopt};
    }
    case HV_CALL_EXCEPTION: {
        if (header->size != sizeof(hv_call_exception)) return {HV_E_BAD_SIZE, std::nullopt};
        auto call = memory.read_obj<hv_call_exception>(block_gpa);
        if (!call) return {HV_E_FAULT, std::nullopt};
        return {HV_OK, *call};
    }
    case HV_CALL_PAGE_FAULT:
        if (header->size != sizeof(hv_call_page_fault)) return {HV_E_BAD_SIZE, std::nullopt};
        return {page_fault_call(memory, block_gpa, context), std::nullopt};
    case HV_CALL_HOST_OP:
        if (header->size != sizeof(hv_call_host_op)) return {HV_E_BAD_SIZE, std::nullopt};
        return {host_op_call(memory, block_gpa, context), std::nullopt};
    default: return {HV_E_UNKNOWN_CALL, std::nullopt};
    }
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
