/* Small helpers every test uses (pc.h). */
#include "pc.h"

unsigned expected_cpus(void)
{
    uint64_t n;
    if (!arg_u64("expect-cpus", &n))
        return 0;
    if (n == 0 || n > PC_MAX_CPUS) {
        report_fail("command line: expect-cpus=%llu is outside 1..%u", (unsigned long long)n, PC_MAX_CPUS);
        return 0;
    }
    return (unsigned)n;
}

const char *hypervisor_name(void)
{
    static char name[13];
    if (!(cpuid(1, 0).c & CPUID_1_ECX_HYPERVISOR))
        return "bare metal";
    struct cpuid_regs r = cpuid(0x40000000u, 0);
    memcpy(name, &r.b, 4);
    memcpy(name + 4, &r.c, 4);
    memcpy(name + 8, &r.d, 4);
    name[12] = 0;
    return name;
}
