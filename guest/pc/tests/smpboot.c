/*
 * smpboot: bring up every AP with INIT/SIPI/SIPI and check who came.
 *
 * mode=each (default): INIT, SIPI, SIPI to each MADT APIC ID in turn.
 * mode=broadcast: the same three IPIs to all-excluding-self.
 * mode=bad-dest: first INIT/SIPI/SIPI to APIC IDs that do not exist: the
 *   ICR's delivery status must clear and nothing may start; then as `each`.
 * mode=garbage-sipi: SIPI one AP to a page of 0xff bytes. Under vmm run
 *   the VM must stop with a guest-crash report for that AP (if it is still
 *   running 5 s later: FAIL); QEMU TCG lets the AP run the garbage on
 *   through SeaBIOS's interrupt vectors, so there the test fails.
 * mode=none: start nothing and spin, for vmm run's --timeout report of the
 *   vCPUs still waiting for a SIPI.
 *
 * x2APIC is used when an APIC ID is above 254 or with x2apic=1. Checks:
 * CPUs online == expect-cpus == MADT processors == fw_cfg's count; APIC IDs
 * unique, all in the MADT, each the one CPUID reports on that CPU.
 */
#include "pc.h"

const char pc_test_name[] = "smpboot";

#define GARBAGE_PAGE 0x7000 /* SIPI vector 0x07 */

static bool madt_needs_x2apic(const struct madt_info *m)
{
    for (unsigned i = 0; i < m->cpus && i < PC_MAX_CPUS; i++)
        if (m->apic_ids[i] > 254)
            return true;
    return false;
}

/* Runs on each CPU: the ID CPUID reports there (x2APIC ID from leaf 0xB
 * when in x2APIC mode, else the 8-bit initial APIC ID). */
static void read_cpuid_apic_id(void *out)
{
    uint32_t *id = out;
    *id = this_cpu()->x2apic ? cpuid(0xb, 0).d : cpuid(1, 0).b >> 24;
}

static void check_cpus(unsigned online, unsigned expect, const struct madt_info *m)
{
    if (expect)
        report_eq("CPUs online vs expect-cpus", expect, online);
    else
        report_skip("CPUs online: %u (no expect-cpus= on the command line)", online);
    report_eq("CPUs online vs MADT enabled processors", m->cpus, online);
    if (fw_cfg_present())
        report_eq("CPUs online vs fw_cfg CPU count (key 5)", fw_cfg_read_int(FW_CFG_NB_CPUS, 2), online);
    else
        report_skip("CPUs online vs fw_cfg: no fw_cfg device");

    unsigned dups = 0, missing = 0, wrong = 0;
    for (unsigned i = 0; i < online; i++) {
        uint32_t id = pc_cpus[i].apic_id, from_cpuid = 0xffffffffu;
        for (unsigned j = 0; j < i; j++)
            if (pc_cpus[j].apic_id == id && !dups++)
                report_info("CPUs %u and %u both have APIC ID %u", j, i, id);
        if (!madt_has_apic_id(id) && !missing++)
            report_info("CPU %u's APIC ID %u is not in the MADT", i, id);
        if (!smp_run_on(i, read_cpuid_apic_id, &from_cpuid) || from_cpuid != id)
            if (!wrong++)
                report_info("CPU %u: APIC ID register %u, CPUID says %u", i, id, from_cpuid);
    }
    report(dups == 0, "APIC IDs of the %u CPUs are unique (%u duplicates)", online, dups);
    report(missing == 0, "every CPU's APIC ID is in the MADT (%u are not)", missing);
    report(wrong == 0, "every CPU ran posted work and its APIC ID register matches CPUID (%u do not)", wrong);
}

/* INIT/SIPI/SIPI to two IDs that do not exist: the ICR must go idle and
 * nothing may start. */
static void check_bad_destinations(const struct madt_info *m, unsigned expect, bool x2apic)
{
    uint32_t ids[2] = {(expect ? expect : m->cpus) + 10, 0xfe};
    smp_prepare(m->cpus, x2apic);
    for (unsigned i = 0; i < 2; i++) {
        if (madt_has_apic_id(ids[i]))
            continue;
        bool idle = smp_init_sipi(ids[i], TRAMPOLINE_SIPI_VECTOR);
        report(idle, "INIT/SIPI/SIPI to missing APIC ID %u: the ICR's delivery status clears", ids[i]);
    }
    mdelay(100);
    report(smp_slots_taken() == 0 && smp_checked_in() == 0,
           "no CPU started after IPIs to missing APIC IDs (%u reached long mode, %u checked in)", smp_slots_taken(),
           smp_checked_in());
}

static PC_NORETURN void garbage_sipi(const struct madt_info *m, bool x2apic)
{
    uint32_t me = apic_id(), target = me;
    for (unsigned i = 0; i < m->cpus && target == me; i++)
        target = m->apic_ids[i];
    if (target == me) {
        report_skip("garbage-sipi: no AP to send it to");
        report_summary();
    }
    memset(phys_ptr(GARBAGE_PAGE), 0xff, 4096);
    smp_prepare(0, x2apic);
    report_info("sending INIT/SIPI/SIPI with vector 0x%x (a page of 0xff bytes) to APIC ID %u; "
                "the VM should stop with a guest-crash report for that vCPU",
                GARBAGE_PAGE >> 12, target);
    smp_init_sipi(target, GARBAGE_PAGE >> 12);
    mdelay(5000);
    report_fail("garbage-sipi: the VM still runs 5 s after APIC ID %u was started on garbage", target);
    report_summary();
}

void test_main(void)
{
    const struct madt_info *m = madt();
    unsigned expect = expected_cpus();
    if (!report(m->found, "MADT found (the APIC IDs to start come from it)"))
        return;
    if (arg_is("mode", "none")) {
        report_info("mode=none: starting no AP and spinning (for vmm run's --timeout report)");
        for (;;)
            cpu_relax();
    }
    bool x2apic = madt_needs_x2apic(m) || arg_is("x2apic", "1");
    if (x2apic && !apic_has_x2apic()) {
        if (madt_needs_x2apic(m)) {
            report_fail("the MADT has APIC IDs above 254, but CPUID.1:ECX[21] (x2APIC) is clear");
            return;
        }
        report_skip("x2apic=1: CPUID.1:ECX[21] is clear on '%s' (QEMU 7.2 TCG has no x2APIC); using xAPIC",
                    hypervisor_name());
        x2apic = false;
    }
    if (arg_is("mode", "garbage-sipi"))
        garbage_sipi(m, x2apic);
    enum smp_mode mode = arg_is("mode", "broadcast") ? SMP_BROADCAST : SMP_EACH;
    if (arg_is("mode", "bad-dest"))
        check_bad_destinations(m, expect, x2apic);
    else if (arg_value("mode", NULL) && !arg_is("mode", "each") && mode != SMP_BROADCAST)
        report_fail("unknown mode= (each, broadcast, bad-dest, garbage-sipi, none)");

    uint64_t t0 = rdtsc();
    unsigned online = smp_boot(mode, x2apic);
    uint64_t us = tsc_to_us(rdtsc() - t0);
    const char *how = mode == SMP_BROADCAST ? "broadcast INIT/SIPI/SIPI" : "INIT/SIPI/SIPI to each AP";
    unsigned long long ms = us / 1000u, tenths = us % 1000u / 100u;
    if (online == m->cpus)
        printf("smpboot: all %u CPUs checked in after %llu.%llu ms (%s, %s, TSC)\n", online, ms, tenths, how,
               x2apic ? "x2APIC" : "xAPIC");
    else
        printf("smpboot: %u of %u CPUs checked in after %llu.%llu ms (%s, %s, TSC)\n", online, m->cpus, ms, tenths,
               how, x2apic ? "x2APIC" : "xAPIC");
    check_cpus(online, expect, m);
    if (x2apic) {
        unsigned not_x2 = 0;
        for (unsigned i = 0; i < online; i++)
            not_x2 += !pc_cpus[i].x2apic;
        report(not_x2 == 0, "all %u CPUs run in x2APIC mode (%u do not)", online, not_x2);
    }
}
