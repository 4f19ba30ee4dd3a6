#include "hypercall.hpp"

#include "format.hpp"

namespace hv {

HypercallResult handle_hypercall(GuestMemory& memory, std::uint64_t block_gpa) {
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
