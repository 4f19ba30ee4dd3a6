/*
 * IPIs and EOI: a self-IPI waits in the IRR while interrupts are off; an
 * IPI to another CPU runs its handler there and nowhere else; a second
 * interrupt of the vector being serviced is held until the EOI.
 */
#include "apic_tests.h"

#define X2APIC_SELF_IPI_MSR 0x83fu
#define MAX_IPI_TARGETS 8u

static volatile uint32_t self_count;

static void self_handler(struct pc_regs *regs)
{
    (void)regs;
    atomic_inc(&self_count);
    apic_eoi();
}

void test_self_ipi(const char *mode)
{
    irq_set_handler(SELF_IPI_VECTOR, self_handler);
    self_count = 0;
    irq_disable();
    apic_self_ipi(SELF_IPI_VECTOR);
    bool pending = apic_irr_bit(SELF_IPI_VECTOR);
    report(pending && self_count == 0, "%s: self-IPI (ICR self shorthand) waits in the IRR while interrupts are off",
           mode);
    uint32_t n = wait_for_one(&self_count);
    report(n == 1 && !apic_irr_bit(SELF_IPI_VECTOR) && !apic_isr_bit(SELF_IPI_VECTOR),
           "%s: self-IPI delivered once interrupts are on (%u times), IRR and ISR clear after EOI", mode, n);
    if (apic_is_x2apic()) {
        self_count = 0;
        wrmsr(X2APIC_SELF_IPI_MSR, SELF_IPI_VECTOR);
        n = wait_for_one(&self_count);
        report(n == 1, "x2APIC: self-IPI through the SELF IPI register (MSR 0x83f) delivered once (%u times)", n);
    }
}

static volatile uint32_t ipi_count, ipi_cpu, ipi_apic_id;

static void ipi_handler(struct pc_regs *regs)
{
    (void)regs;
    ipi_cpu = this_cpu()->index;
    ipi_apic_id = apic_id();
    atomic_inc(&ipi_count);
    apic_eoi();
}

void test_ipi_other_cpu(const char *mode)
{
    unsigned cpus = smp_cpus();
    if (cpus < 2) {
        report_skip("%s: IPI to another CPU: only one CPU is online", mode);
        return;
    }
    irq_set_handler(IPI_VECTOR, ipi_handler);
    unsigned bad = 0, sent = 0;
    /* The last APs (at most MAX_IPI_TARGETS of them). */
    for (unsigned t = cpus > MAX_IPI_TARGETS ? cpus - MAX_IPI_TARGETS : 1; t < cpus; t++, sent++) {
        ipi_count = 0;
        ipi_cpu = ipi_apic_id = 0xffffffffu;
        bool idle = apic_icr_send(pc_cpus[t].apic_id, APIC_DM_FIXED | IPI_VECTOR, 10000);
        uint32_t n = wait_for_one(&ipi_count);
        if (!idle || n != 1 || ipi_cpu != t || ipi_apic_id != pc_cpus[t].apic_id) {
            if (!bad++)
                report_info("%s: IPI to CPU %u (APIC ID %u): ICR %s, ran %u times, on CPU %d (APIC ID %d)", mode, t,
                            pc_cpus[t].apic_id, idle ? "idle" : "stayed busy", n, (int)ipi_cpu, (int)ipi_apic_id);
        }
    }
    report(bad == 0, "%s: fixed IPIs to %u other CPUs each ran the handler once, on that CPU (%u did not)", mode,
           sent, bad);
}

/* The EOI check runs inside the first interrupt's handler. */
static volatile uint32_t eoi_count;
static bool isr_at_entry, irr_before_eoi, isr_before_eoi, nested_isr;
static uint32_t count_before_eoi, count_after_eoi;

static void eoi_handler(struct pc_regs *regs)
{
    (void)regs;
    uint32_t n = atomic_inc(&eoi_count) + 1;
    if (n != 1) { /* the second one, delivered by our EOI below */
        nested_isr = apic_isr_bit(EOI_VECTOR);
        apic_eoi();
        return;
    }
    isr_at_entry = apic_isr_bit(EOI_VECTOR);
    apic_self_ipi(EOI_VECTOR);
    irq_enable(); /* only the ISR bit (same priority class) holds it back now */
    udelay(1000);
    irr_before_eoi = apic_irr_bit(EOI_VECTOR);
    isr_before_eoi = apic_isr_bit(EOI_VECTOR);
    count_before_eoi = eoi_count;
    apic_eoi();
    uint64_t end = tsc_deadline_us(ARRIVAL_US);
    while (eoi_count < 2 && rdtsc() < end)
        cpu_relax();
    irq_disable();
    count_after_eoi = eoi_count;
}

void test_eoi(const char *mode)
{
    irq_set_handler(EOI_VECTOR, eoi_handler);
    eoi_count = 0;
    irq_disable();
    apic_self_ipi(EOI_VECTOR);
    wait_for_count(&eoi_count, 2, ARRIVAL_US);
    report(isr_at_entry, "%s: EOI: the ISR bit is set while the handler runs", mode);
    report(count_before_eoi == 1 && irr_before_eoi && isr_before_eoi,
           "%s: EOI: the same vector sent from its handler waits in the IRR until the EOI (delivered %u times, "
           "IRR %d, ISR %d)",
           mode, count_before_eoi, irr_before_eoi, isr_before_eoi);
    report(count_after_eoi == 2 && nested_isr, "%s: EOI: after the EOI it is delivered (%u times in all)", mode,
           count_after_eoi);
    report(!apic_isr_bit(EOI_VECTOR) && !apic_irr_bit(EOI_VECTOR), "%s: EOI: ISR and IRR clear at the end", mode);
}
