/*
 * apic: the local APIC. In xAPIC mode, then (if CPUID says the CPU has one)
 * in x2APIC mode: the APIC ID against CPUID, the version register, the
 * timer in one-shot, periodic and TSC-deadline modes, self-IPIs, an IPI to
 * another CPU, and EOI (an interrupt of the vector being serviced waits in
 * the IRR until the EOI). apic_timer.c and apic_ipi.c hold the checks.
 */
#include "apic_tests.h"

const char pc_test_name[] = "apic";

uint32_t wait_for_count(volatile uint32_t *counter, uint32_t target, uint64_t timeout_us)
{
    uint64_t end = tsc_deadline_us(timeout_us);
    irq_enable();
    while (atomic_load(counter) < target && rdtsc() < end)
        cpu_relax();
    irq_disable();
    return atomic_load(counter);
}

uint32_t wait_for_one(volatile uint32_t *counter)
{
    if (!wait_for_count(counter, 1, ARRIVAL_US))
        return 0;
    return wait_for_count(counter, 2, AFTERWARDS_US);
}

static void check_id_and_version(const char *mode)
{
    struct cpuid_regs leaf1 = cpuid(1, 0);
    uint32_t id = apic_id();
    if (apic_is_x2apic()) {
        /* x2APIC ID: CPUID.0xB:EDX, whose low 8 bits are also CPUID.1's. */
        uint32_t from_leaf_b = cpuid(0, 0).a >= 0xb ? cpuid(0xb, 0).d : leaf1.b >> 24;
        report_eq("x2APIC: APIC ID vs CPUID.0xB:EDX", from_leaf_b, id);
        report_eq("x2APIC: APIC ID bits 7:0 vs CPUID.1:EBX[31:24]", leaf1.b >> 24, id & 0xff);
    } else {
        report_eq("xAPIC: APIC ID vs CPUID.1:EBX[31:24]", leaf1.b >> 24, id);
    }
    uint32_t v = apic_read(APIC_VERSION), version = v & 0xff, max_lvt = (v >> 16) & 0xff;
    /* 0x10-0x15: an integrated APIC; at least timer, LINT0, LINT1, error
     * (and, counting from 0, max LVT entry >= 3). */
    report(version >= 0x10 && version <= 0x15 && max_lvt >= 3 && max_lvt <= 6,
           "%s: version register 0x%x: version 0x%x in 0x10..0x15, max LVT entry %u in 3..6", mode, v, version,
           max_lvt);
    report((apic_read(APIC_SVR) & (APIC_SVR_ENABLE | 0xff)) == (APIC_SVR_ENABLE | SPURIOUS_VECTOR),
           "%s: SVR reads back enabled with spurious vector 0x%x (0x%x)", mode, SPURIOUS_VECTOR,
           apic_read(APIC_SVR));
}

static void run_suite(const char *mode)
{
    check_id_and_version(mode);
    uint64_t timer_hz = apic_timer_hz();
    report(timer_hz >= 1000000u, "%s: the timer counts down (%llu kHz at divide 1)", mode,
           (unsigned long long)(timer_hz / 1000u));
    if (timer_hz >= 1000000u) {
        test_timer_oneshot(mode, timer_hz);
        test_timer_periodic(mode, timer_hz);
    }
    test_timer_tsc_deadline(mode);
    test_self_ipi(mode);
    test_ipi_other_cpu(mode);
    test_eoi(mode);
}

static void enable_x2apic_here(void *ok)
{
    *(bool *)ok = apic_enable_x2apic();
}

void test_main(void)
{
    unsigned cpus = smp_boot(SMP_EACH, false);
    report_info("%u CPUs online", cpus);
    run_suite("xAPIC");

    if (!apic_has_x2apic()) {
        report_skip("x2APIC: CPUID.1:ECX[21] is clear on '%s' (QEMU 7.2 TCG has no x2APIC)", hypervisor_name());
        return;
    }
    /* The x2APIC registers exist only in x2APIC mode (SDM 10.12.1.2). */
    uint64_t value;
    uint32_t vector;
    bool read_ok = rdmsr_safe(0x802, &value, &vector);
    report(!read_ok && vector == 13, "xAPIC mode: reading x2APIC MSR 0x802 raises #GP (%s, vector %d)",
           read_ok ? "read succeeded" : "faulted", read_ok ? -1 : (int)vector);

    /* APs first: the BSP's wake-up IPIs are still xAPIC ones. */
    bool all = true;
    for (unsigned i = 1; i < cpus; i++) {
        bool ok = false;
        smp_run_on(i, enable_x2apic_here, &ok);
        all &= ok;
    }
    bool bsp = apic_enable_x2apic();
    if (!report(all && bsp && apic_is_x2apic(), "x2APIC: every CPU switched to x2APIC mode (IA32_APIC_BASE bit 10)"))
        return;
    report_eq_hex("x2APIC: IA32_APIC_BASE enable bits", APIC_BASE_ENABLE | APIC_BASE_X2APIC,
                  rdmsr(MSR_APIC_BASE) & (APIC_BASE_ENABLE | APIC_BASE_X2APIC));
    run_suite("x2APIC");

    /* x2APIC -> xAPIC directly is an invalid transition (through disabled
     * only), so the write must fault and leave the mode alone. */
    uint64_t base = rdmsr(MSR_APIC_BASE);
    bool write_ok = wrmsr_safe(MSR_APIC_BASE, base & ~(uint64_t)APIC_BASE_X2APIC, &vector);
    report(!write_ok && vector == 13 && rdmsr(MSR_APIC_BASE) == base,
           "x2APIC: clearing IA32_APIC_BASE bit 10 alone raises #GP (%s, vector %d)",
           write_ok ? "write succeeded" : "faulted", write_ok ? -1 : (int)vector);
}
