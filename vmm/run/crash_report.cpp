#include "vmm/run/crash_report.hpp"

#include "vmm/kvm/text_format.hpp"
#include "vmm/run/guest_page_walk.hpp"

#include <capstone/capstone.h>
#include <cstdio>

namespace hv {
namespace {

std::string reg_line(const char* const names[], const std::uint64_t values[], int n) {
    std::string out;
    char buf[48];
    for (int i = 0; i < n; ++i) {
        std::snprintf(buf, sizeof buf, "  %-6s %016llx", names[i], static_cast<unsigned long long>(values[i]));
        out += buf;
        if (i % 3 == 2 || i == n - 1) out += "\n";
    }
    return out;
}

int code_bits(const kvm_sregs& s) {
    if ((s.efer & (1u << 10)) && s.cs.l) return 64;
    if (!(s.cr0 & 1)) return 16;
    return s.cs.db ? 32 : 16;
}

} // namespace

std::string disassemble(std::span<const std::uint8_t> code, std::uint64_t address, int bits, int max_instructions) {
    csh handle;
    const cs_mode mode = bits == 64 ? CS_MODE_64 : bits == 32 ? CS_MODE_32 : CS_MODE_16;
    if (cs_open(CS_ARCH_X86, mode, &handle) != CS_ERR_OK) return "  (capstone failed to initialise)\n";
    cs_insn* insn = nullptr;
    const std::size_t n = cs_disasm(handle, code.data(), code.size(), address, max_instructions, &insn);
    std::string out;
    char buf[512];
    for (std::size_t i = 0; i < n; ++i) {
        std::string bytes;
        for (std::size_t b = 0; b < insn[i].size; ++b) {
            char hb[4];
            std::snprintf(hb, sizeof hb, "%02x ", insn[i].bytes[b]);
            bytes += hb;
        }
        std::snprintf(buf, sizeof buf, "  %s %016llx  %-24s %s %s\n", i == 0 ? "=>" : "  ",
                      static_cast<unsigned long long>(insn[i].address), bytes.c_str(), insn[i].mnemonic, insn[i].op_str);
        out += buf;
    }
    if (n == 0) out = "  (no valid instruction at " + hex(address) + ")\n";
    if (insn) cs_free(insn, n);
    cs_close(&handle);
    return out;
}

std::string format_crash_report(const CrashInput& in, const GuestMemory& memory) {
    kvm_regs r = in.regs;
    std::uint64_t cr2 = in.sregs.cr2;
    std::string source = "registers at the exit";
    if (in.guest_frame) {
        const auto& f = *in.guest_frame;
        r.rax = f.gprs[HV_RAX]; r.rbx = f.gprs[HV_RBX]; r.rcx = f.gprs[HV_RCX]; r.rdx = f.gprs[HV_RDX];
        r.rsi = f.gprs[HV_RSI]; r.rdi = f.gprs[HV_RDI]; r.rbp = f.gprs[HV_RBP]; r.r8 = f.gprs[HV_R8];
        r.r9 = f.gprs[HV_R9]; r.r10 = f.gprs[HV_R10]; r.r11 = f.gprs[HV_R11]; r.r12 = f.gprs[HV_R12];
        r.r13 = f.gprs[HV_R13]; r.r14 = f.gprs[HV_R14]; r.r15 = f.gprs[HV_R15];
        r.rip = f.rip; r.rsp = f.rsp; r.rflags = f.rflags;
        cr2 = f.cr2;
        source = "registers the guest's exception handler saved";
    }
    std::string out = in.title + " on vcpu " + std::to_string(in.vcpu) + ": " + in.reason + "\n" + source + ":\n";
    static const char* const gpr_names[] = {"rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp",
                                            "r8",  "r9",  "r10", "r11", "r12", "r13", "r14", "r15"};
    const std::uint64_t gprs[] = {r.rax, r.rbx, r.rcx, r.rdx, r.rsi, r.rdi, r.rbp, r.rsp,
                                  r.r8,  r.r9,  r.r10, r.r11, r.r12, r.r13, r.r14, r.r15};
    out += reg_line(gpr_names, gprs, 16);
    static const char* const ctl_names[] = {"rip", "rflags", "cr0", "cr2", "cr3", "cr4", "efer", "cs", "ss"};
    const std::uint64_t ctl[] = {r.rip, r.rflags, in.sregs.cr0, cr2, in.sregs.cr3, in.sregs.cr4,
                                 in.sregs.efer, in.sregs.cs.selector, in.sregs.ss.selector};
    out += reg_line(ctl_names, ctl, 9);
    if (!in.guest_frame && r.rip == 0xfff0 && in.sregs.cs.selector == 0xf000 && !(in.sregs.cr0 & 1))
        out += "note: these are the vCPU's reset values: KVM may reset the vCPU when it intercepts a shutdown "
               "(it does on AMD SVM), so the state at the fault is lost\n";

    const int bits = code_bits(in.sregs);
    std::string failure;
    const std::uint64_t rip = bits == 64 ? r.rip : (r.rip & 0xffffffffu);
    const auto code = read_guest_virtual(memory, in.sregs, rip, 32, &failure);
    out += "code at rip (" + std::to_string(bits) + "-bit):\n";
    if (code.empty())
        out += "  rip " + hex(rip) + " is not readable: " + failure + "\n";
    else
        out += disassemble(code, rip, bits, 6);
    return out;
}

} // namespace hv
