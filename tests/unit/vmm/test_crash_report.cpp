// hv::disassemble and hv::format_crash_report: what the user sees when a
// guest dies. The report reads the code at RIP through the guest's own page
// tables, so these tests build real identity tables with
// write_identity_page_tables and place machine code in GuestMemory.
#include <doctest/doctest.h>

#include <cstdint>
#include <cstdio>
#include <string>
#include <vector>

#include "hv/abi.h"
#include "tests/support/text_match.hpp"
#include "vmm/boot/boot_setup.hpp"
#include "vmm/kvm/guest_memory.hpp"
#include "vmm/run/crash_report.hpp"

using hv::CrashInput;
using hv::GuestMemory;
using hv::test::contains;

namespace {

constexpr std::uint64_t MiB = 1ull << 20;

std::size_t count_lines(const std::string& s) {
    std::size_t n = 0;
    for (char c : s) n += c == '\n';
    return n;
}

// The 16-hex-digit value printed after a register's name (the name as a
// whole word, followed by blanks), or "" if absent. (No std::regex: GCC 12
// warns inside <regex> under -fsanitize=address.)
std::string reg_value(const std::string& report, const std::string& name) {
    auto is_hex = [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); };
    for (std::size_t at = report.find(name); at != std::string::npos; at = report.find(name, at + 1)) {
        if (at > 0 && report[at - 1] != ' ' && report[at - 1] != '\n') continue;
        std::size_t v = at + name.size();
        if (v >= report.size() || report[v] != ' ') continue;
        while (v < report.size() && report[v] == ' ') ++v;
        std::size_t end = v;
        while (end < report.size() && is_hex(report[end])) ++end;
        if (end - v == 16) return report.substr(v, 16);
    }
    return "";
}

std::string hex16(std::uint64_t v) {
    char buf[17];
    std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
    return buf;
}

// Long-mode state as boot_setup gives an ELF64 guest (SDM bit positions):
//   CR0 = PE(0)|MP(1)|ET(4)|NE(5)|WP(16)|PG(31) = 0x80010033
//   CR4 = PAE(5)|OSFXSR(9)|OSXMMEXCPT(10)       = 0x620
//   EFER = SCE(0)|LME(8)|LMA(10)|NXE(11)         = 0xd01
kvm_sregs long_mode_sregs() {
    kvm_sregs s{};
    s.cr0 = 0x80010033;
    s.cr3 = 0x2000;
    s.cr4 = 0x620;
    s.efer = 0xd01;
    s.cs.selector = HV_GDT_CODE64;
    s.cs.l = 1;
    s.cs.present = 1;
    s.ss.selector = HV_GDT_DATA;
    return s;
}

// 32-bit protected mode, paging off (a multiboot guest): CR0 = PE|ET = 0x11.
kvm_sregs protected_mode_sregs() {
    kvm_sregs s{};
    s.cr0 = 0x11;
    s.cs.selector = HV_GDT_CODE32;
    s.cs.db = 1;
    s.cs.present = 1;
    s.ss.selector = HV_GDT_DATA;
    return s;
}

// Code placed at 0x100000:
//   100000: 48 89 e5        mov    rbp, rsp
//   100003: 0f 0b           ud2
//   100005: f4              hlt
const std::vector<std::uint8_t> kCode = {0x48, 0x89, 0xe5, 0x0f, 0x0b, 0xf4};

struct Guest {
    GuestMemory mem{4 * MiB};
    Guest() {
        hv::write_identity_page_tables(mem);
        REQUIRE(mem.write(0x100000, kCode));
    }
};

kvm_regs distinct_regs() {
    kvm_regs r{};
    r.rax = 0xa1a1a1a1a1a1a1a1;
    r.rbx = 0xb2b2b2b2b2b2b2b2;
    r.rcx = 0x00000000000000c3;
    r.rdx = 0x00000000d4d4d4d4;
    r.rsi = 0x1111;
    r.rdi = 0x2222;
    r.rbp = 0x3333;
    r.rsp = 0x3fc000;
    r.r8 = 0x8888888888888888;
    r.r15 = 0xf15f15f15f15f15f;
    r.rip = 0x100003;
    r.rflags = 0x10046;
    return r;
}

} // namespace

// ---------------------------------------------------------------------------
// disassemble

TEST_CASE("disassemble: ud2 in 64-bit mode, with address and bytes") {
    const std::vector<std::uint8_t> code = {0x0f, 0x0b}; // ud2
    const std::string out = hv::disassemble(code, 0x100000, 64, 10);
    CHECK(contains(out, "ud2"));
    CHECK(contains(out, "0000000000100000"));
    CHECK(contains(out, "0f 0b"));
    CHECK(count_lines(out) == 1);
}

TEST_CASE("disassemble: the same bytes decode differently in 64- and 32-bit mode") {
    // 64-bit:  48 89 e5   mov rbp, rsp      (REX.W + 89 /r)
    // 32-bit:  48         dec eax           (0x48 is DEC r32 outside long mode)
    //          89 e5      mov ebp, esp
    const std::vector<std::uint8_t> code = {0x48, 0x89, 0xe5};
    const std::string out64 = hv::disassemble(code, 0x1000, 64, 10);
    CHECK(contains(out64, "mov"));
    CHECK(contains(out64, "rbp, rsp"));
    CHECK(count_lines(out64) == 1);

    const std::string out32 = hv::disassemble(code, 0x1000, 32, 10);
    CHECK(contains(out32, "dec"));
    CHECK(contains(out32, "eax"));
    CHECK(contains(out32, "ebp, esp"));
    CHECK(count_lines(out32) == 2);
    CHECK(contains(out32, "0000000000001001")); // the mov starts at 0x1001
}

TEST_CASE("disassemble: 16-bit mode") {
    // b8 34 12   mov ax, 0x1234
    const std::vector<std::uint8_t> code = {0xb8, 0x34, 0x12};
    const std::string out = hv::disassemble(code, 0x7c00, 16, 10);
    CHECK(contains(out, "mov"));
    CHECK(contains(out, "ax, 0x1234"));
}

TEST_CASE("disassemble: hlt, and the instruction limit") {
    // f4 hlt; 90 nop; 90 nop; 90 nop
    const std::vector<std::uint8_t> code = {0xf4, 0x90, 0x90, 0x90};
    const std::string out = hv::disassemble(code, 0, 64, 2);
    CHECK(contains(out, "hlt"));
    CHECK(count_lines(out) == 2);
    CHECK(count_lines(hv::disassemble(code, 0, 64, 10)) == 4);
}

TEST_CASE("disassemble: the first line marks the faulting instruction") {
    // 90 nop; 0f 0b ud2
    const std::vector<std::uint8_t> code = {0x90, 0x0f, 0x0b};
    const std::string out = hv::disassemble(code, 0x2000, 64, 10);
    const std::string first = out.substr(0, out.find('\n'));
    const std::string second = out.substr(out.find('\n') + 1);
    CHECK(contains(first, "=>"));
    CHECK(contains(first, "nop"));
    CHECK_FALSE(contains(second, "=>"));
    CHECK(contains(second, "ud2"));
}

TEST_CASE("disassemble: invalid or missing bytes") {
    // 06 is "push es" in 32-bit mode and invalid in 64-bit mode.
    const std::vector<std::uint8_t> push_es = {0x06};
    CHECK(contains(hv::disassemble(push_es, 0x100000, 64, 4), "no valid instruction at 0x100000"));
    CHECK(contains(hv::disassemble(push_es, 0x100000, 32, 4), "push"));
    CHECK(contains(hv::disassemble({}, 0x42, 64, 4), "no valid instruction at 0x42"));
    // A truncated instruction: 48 89 without its ModRM byte.
    const std::vector<std::uint8_t> truncated = {0x48, 0x89};
    CHECK(contains(hv::disassemble(truncated, 0, 64, 4), "no valid instruction"));
}

// ---------------------------------------------------------------------------
// format_crash_report

TEST_CASE("format_crash_report: reason, registers and the instruction at RIP (64-bit)") {
    Guest g;
    CrashInput in;
    in.reason = "triple fault (KVM_EXIT_SHUTDOWN)";
    in.vcpu = 2;
    in.regs = distinct_regs();
    in.sregs = long_mode_sregs();
    in.sregs.cr2 = 0xbadc0de;
    const std::string report = hv::format_crash_report(in, g.mem);
    CAPTURE(report);

    CHECK(contains(report, "vcpu 2"));
    CHECK(contains(report, "triple fault (KVM_EXIT_SHUTDOWN)"));
    CHECK(reg_value(report, "rax") == hex16(in.regs.rax));
    CHECK(reg_value(report, "rbx") == hex16(in.regs.rbx));
    CHECK(reg_value(report, "rcx") == hex16(in.regs.rcx));
    CHECK(reg_value(report, "rdx") == hex16(in.regs.rdx));
    CHECK(reg_value(report, "rsi") == hex16(in.regs.rsi));
    CHECK(reg_value(report, "rdi") == hex16(in.regs.rdi));
    CHECK(reg_value(report, "rbp") == hex16(in.regs.rbp));
    CHECK(reg_value(report, "rsp") == hex16(in.regs.rsp));
    CHECK(reg_value(report, "r8") == hex16(in.regs.r8));
    CHECK(reg_value(report, "r15") == hex16(in.regs.r15));
    CHECK(reg_value(report, "rip") == hex16(0x100003));
    CHECK(reg_value(report, "rflags") == hex16(0x10046));
    CHECK(reg_value(report, "cr0") == hex16(0x80010033));
    CHECK(reg_value(report, "cr2") == hex16(0xbadc0de));
    CHECK(reg_value(report, "cr3") == hex16(0x2000));
    CHECK(reg_value(report, "cr4") == hex16(0x620));
    CHECK(reg_value(report, "efer") == hex16(0xd01));
    CHECK(reg_value(report, "cs") == hex16(HV_GDT_CODE64));

    CHECK(contains(report, "64-bit"));
    // The first disassembled instruction is the ud2 at RIP, marked.
    const auto at = report.find("=>");
    REQUIRE(at != std::string::npos);
    const std::string line = report.substr(at, report.find('\n', at) - at);
    CHECK(contains(line, "0000000000100003"));
    CHECK(contains(line, "ud2"));
    CHECK(contains(report, "hlt")); // followed by the next instruction
    CHECK_FALSE(contains(report, "not readable"));
}

TEST_CASE("format_crash_report: RIP outside RAM says the code is not readable") {
    Guest g; // 4 MiB of RAM; the identity map covers 4 GiB
    CrashInput in;
    in.reason = "test";
    in.regs = distinct_regs();
    in.regs.rip = 0x10000000; // 256 MiB: mapped by the tables, but no RAM there
    in.sregs = long_mode_sregs();
    const std::string report = hv::format_crash_report(in, g.mem);
    CAPTURE(report);
    CHECK(contains(report, "0x10000000 is not readable"));
    CHECK(contains(report, "outside guest RAM"));
    CHECK_FALSE(contains(report, "=>"));
}

TEST_CASE("format_crash_report: RIP not mapped by the guest's page tables") {
    Guest g;
    CrashInput in;
    in.reason = "test";
    in.regs.rip = 0x100000000; // 4 GiB: PDPT[4] is not present
    in.sregs = long_mode_sregs();
    const std::string report = hv::format_crash_report(in, g.mem);
    CAPTURE(report);
    CHECK(contains(report, "not readable"));
    CHECK(contains(report, "PDPT"));
}

TEST_CASE("format_crash_report: the guest's exception frame overrides the exit registers") {
    Guest g;
    CrashInput in;
    in.reason = "unhandled guest exception #UD";
    in.regs = distinct_regs(); // the handler's registers
    in.regs.rip = 0x100005;
    in.sregs = long_mode_sregs();
    in.sregs.cr2 = 0x1;
    hv_call_exception f{};
    f.vector = 6;
    f.rip = 0x100000; // the faulting instruction: mov rbp, rsp
    f.rsp = 0x3fbff0;
    f.rflags = 0x246;
    f.cr2 = 0x77770000;
    for (int i = 0; i < HV_NGPRS; ++i) f.gprs[i] = 0xf000 + static_cast<std::uint64_t>(i);
    in.guest_frame = f;
    const std::string report = hv::format_crash_report(in, g.mem);
    CAPTURE(report);

    CHECK(reg_value(report, "rax") == hex16(0xf000 + HV_RAX));
    CHECK(reg_value(report, "rbx") == hex16(0xf000 + HV_RBX));
    CHECK(reg_value(report, "rdi") == hex16(0xf000 + HV_RDI));
    CHECK(reg_value(report, "r8") == hex16(0xf000 + HV_R8));
    CHECK(reg_value(report, "r15") == hex16(0xf000 + HV_R15));
    CHECK(reg_value(report, "rsp") == hex16(0x3fbff0));
    CHECK(reg_value(report, "rip") == hex16(0x100000));
    CHECK(reg_value(report, "rflags") == hex16(0x246));
    CHECK(reg_value(report, "cr2") == hex16(0x77770000));
    CHECK_FALSE(contains(report, hex16(in.regs.rax)));
    const auto at = report.find("=>");
    REQUIRE(at != std::string::npos);
    const std::string line = report.substr(at, report.find('\n', at) - at);
    CHECK(contains(line, "0000000000100000"));
    CHECK(contains(line, "rbp, rsp"));
}

TEST_CASE("format_crash_report: 32-bit protected mode without paging") {
    Guest g;
    CrashInput in;
    in.reason = "test";
    in.regs.rip = 0xffffffff00100000; // only EIP counts outside long mode
    in.sregs = protected_mode_sregs();
    const std::string report = hv::format_crash_report(in, g.mem);
    CAPTURE(report);
    CHECK(contains(report, "32-bit"));
    // Bytes 48 89 e5 at 0x100000 decode as dec eax; mov ebp, esp in 32-bit mode.
    const auto at = report.find("=>");
    REQUIRE(at != std::string::npos);
    const std::string line = report.substr(at, report.find('\n', at) - at);
    CHECK(contains(line, "0000000000100000"));
    CHECK(contains(line, "dec"));
    CHECK(contains(report, "ebp, esp"));
}
