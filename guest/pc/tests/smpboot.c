/*
 * smpboot: bring up every AP with INIT/SIPI/SIPI and check who came.
 *
 * mode=each (default): INIT, SIPI, SIPI to each MADT APIC ID in turn.
 * mode=broadcast: the same three IPIs to all-excluding-self.
 * mode=bad-dest: first INIT/SIPI/SIPI to APIC IDs that do not exist: the
 *   ICR's delivery status must clear and nothing may start; then as `each`.
 * mode=garbage-sipi: SIPI one AP to a page of 0xff bytes (an invalid
 *   opcode, then wherever the real-mode interrupt vectors lead). What the
 *   AP then does is up to the garbage: kvm_pvm stops it with an emulation
 *   failure, kvm_amd and QEMU let it run on. Waits 2 s and exits 0; the
 *   test around it checks that the VMM survives whatever happened.
 * mode=ap-triple-fault: SIPI one AP to code that loads an empty real-mode
 *   IDT and raises #BP: the AP triple-faults. On a PC that resets the
 *   machine (QEMU does); vmm run must end the VM with a guest-crash report
 *   for that vCPU, so the guest FAILs if it still runs 5 s later.
 * mode=none: start nothing and spin, for vmm run's --timeout report of the
 *   vCPUs still waiting for a SIPI.
 *
 * x2APIC is used when an APIC ID is above 254 or with x2apic=1. Checks:
 * CPUs online == expect-cpus == MADT processors == fw_cfg's count; APIC IDs
 * unique, all in the MADT, each the one CPUID reports on that CPU.
 */
#include "pc.h"

const char pc_test_name[] = "smpboot";

#define BAD_SIPI_PAGE 0x7000 /* SIPI vector 0x07 */

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

/* Any AP other than us (the MADT's first), or SKIP and end. */
static uint32_t some_ap(const struct madt_info *m)
{
    uint32_t me = apic_id(), target = me;
    for (unsigned i = 0; i < m->cpus && target == me; i++)
        target = m->apic_ids[i];
    if (target == me) {
        report_skip("no AP to start");
        report_summary();
    }
    return target;
}

static PC_NORETURN void garbage_sipi(const struct madt_info *m, bool x2apic)
{
    uint32_t target = some_ap(m);
    memset(phys_ptr(BAD_SIPI_PAGE), 0xff, 4096);
    smp_prepare(0, x2apic);
    report_info("sending INIT/SIPI/SIPI with vector 0x%x (a page of 0xff bytes) to APIC ID %u; "
                "what it runs then is up to the garbage",
                BAD_SIPI_PAGE >> 12, target);
    smp_init_sipi(target, BAD_SIPI_PAGE >> 12);
    mdelay(2000);
    report_info("garbage-sipi: the VM still runs 2 s after APIC ID %u was started on garbage", target);
    report_summary();
}

/* Real mode, CS = the page: cli; lidt cs:[0x10] (limit 0); int3. With no
 * IDT the #BP cannot be delivered, nor the #DF after it: shutdown. */
static const uint8_t triple_fault_code[] = {0xfa, 0x2e, 0x0f, 0x01, 0x1e, 0x10, 0x00, 0xcc};
#define TRIPLE_FAULT_IDTR 0x10 /* 6 zero bytes: limit 0, base 0 */

static PC_NORETURN void ap_triple_fault(const struct madt_info *m, bool x2apic)
{
    uint32_t target = some_ap(m);
    uint8_t *page = phys_ptr(BAD_SIPI_PAGE);
    memset(page, 0, 4096);
    memcpy(page, triple_fault_code, sizeof triple_fault_code);
    memset(page + TRIPLE_FAULT_IDTR, 0, 6);
    smp_prepare(0, x2apic);
    report_info("starting APIC ID %u on code that triple-faults; the VM should stop with a guest-crash report "
                "for that vCPU",
                target);
    smp_init_sipi(target, BAD_SIPI_PAGE >> 12);
    mdelay(5000);
    report_fail("ap-triple-fault: the VM still runs 5 s after APIC ID %u triple-faulted", target);
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
    if (arg_is("mode", "ap-triple-fault"))
        ap_triple_fault(m, x2apic);
    enum smp_mode mode = arg_is("mode", "broadcast") ? SMP_BROADCAST : SMP_EACH;
    if (arg_is("mode", "bad-dest"))
        check_bad_destinations(m, expect, x2apic);
    else if (arg_value("mode", NULL) && !arg_is("mode", "each") && mode != SMP_BROADCAST)
        report_fail("unknown mode= (each, broadcast, bad-dest, garbage-sipi, ap-triple-fault, none)");

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
