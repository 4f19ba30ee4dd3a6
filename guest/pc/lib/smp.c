/* AP bring-up and work posting (smp.h). */
#include "smp.h"

#include "apic.h"
#include "boot.h"
#include "idt.h"
#include "layout.h"
#include "rt_string.h"
#include "madt.h"
#include "report.h"
#include "time.h"

#define ICR_TIMEOUT_US 10000u

extern const char trampoline_start[], trampoline_end[], trampoline_params[]; /* trampoline.S */
extern const char gdt_descriptor[]; /* entry.S: 16-bit limit, 64-bit base */

static volatile uint32_t checked_in;
static bool aps_use_x2apic;

static volatile uint8_t *params(void)
{
    return (volatile uint8_t *)phys_ptr(TRAMPOLINE_BASE + (uintptr_t)(trampoline_params - trampoline_start));
}

static void put32(unsigned off, uint32_t v) { *(volatile uint32_t *)(params() + off) = v; }
static void put64(unsigned off, uint64_t v) { *(volatile uint64_t *)(params() + off) = v; }

static void wake_handler(struct pc_regs *regs)
{
    (void)regs;
    apic_eoi();
}

static PC_NORETURN void ap_idle(struct pc_cpu *c)
{
    for (;;) {
        irq_disable();
        void (*fn)(void *) = __atomic_load_n(&c->work_fn, __ATOMIC_ACQUIRE);
        if (fn) {
            void *arg = c->work_arg;
            c->work_fn = NULL;
            fn(arg);
            __atomic_fetch_add(&c->work_done, 1, __ATOMIC_RELEASE);
            continue;
        }
        safe_halt(); /* the wake IPI, if already pending, ends the hlt */
    }
}

void ap_entry(uint32_t slot); /* called by the trampoline */
void ap_entry(uint32_t slot)
{
    percpu_init(slot + 1);
    idt_load();
    if (aps_use_x2apic)
        apic_enable_x2apic();
    else
        apic_enable();
    struct pc_cpu *c = this_cpu();
    c->online = true;
    atomic_inc(&checked_in);
    ap_idle(c);
}

void smp_prepare(unsigned max_aps, bool x2apic)
{
    if (max_aps > PC_MAX_CPUS - 1)
        max_aps = PC_MAX_CPUS - 1;
    irq_set_handler(SMP_WAKE_VECTOR, wake_handler);
    aps_use_x2apic = x2apic;
    checked_in = 0;
    memcpy(phys_ptr(TRAMPOLINE_BASE), trampoline_start, (size_t)(trampoline_end - trampoline_start));
    put64(TRAMP_CR3, read_cr3());
    *(volatile uint16_t *)(params() + TRAMP_GDT_LIMIT) = *(const uint16_t *)gdt_descriptor;
    put32(TRAMP_GDT_LIMIT + 2, (uint32_t)*(const uint64_t *)(gdt_descriptor + 2));
    void *stacks = max_aps ? heap_alloc((size_t)max_aps * AP_STACK_SIZE, 4096) : NULL;
    put64(TRAMP_STACKS, (uint64_t)(uintptr_t)stacks);
    put64(TRAMP_STACK_SIZE, AP_STACK_SIZE);
    put64(TRAMP_ENTRY, (uint64_t)(uintptr_t)ap_entry);
    put32(TRAMP_NEXT_SLOT, 0);
    put32(TRAMP_MAX_SLOTS, max_aps);
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

/* INIT (level assert, edge), 10 ms, SIPI, 200 us, SIPI: the sequence the
 * MP specification gives; the second SIPI is ignored by an AP that already
 * left wait-for-SIPI. */
static bool init_sipi_sipi(uint32_t dest, uint32_t shorthand, uint8_t sipi_vector)
{
    bool ok = apic_icr_send(dest, shorthand | APIC_DM_INIT | APIC_ICR_ASSERT, ICR_TIMEOUT_US);
    mdelay(10);
    ok &= apic_icr_send(dest, shorthand | APIC_DM_STARTUP | sipi_vector, ICR_TIMEOUT_US);
    udelay(200);
    ok &= apic_icr_send(dest, shorthand | APIC_DM_STARTUP | sipi_vector, ICR_TIMEOUT_US);
    return ok;
}

bool smp_init_sipi(uint32_t apic_id, uint8_t sipi_vector) { return init_sipi_sipi(apic_id, 0, sipi_vector); }

bool smp_init_sipi_broadcast(uint8_t sipi_vector)
{
    return init_sipi_sipi(0, APIC_DEST_ALL_BUT_SELF, sipi_vector);
}

unsigned smp_slots_taken(void) { return atomic_load((volatile uint32_t *)(params() + TRAMP_NEXT_SLOT)); }
unsigned smp_checked_in(void) { return atomic_load(&checked_in); }
unsigned smp_cpus(void) { return 1 + smp_checked_in(); }

bool smp_wait_checked_in(unsigned count, uint64_t timeout_us)
{
    uint64_t end = tsc_deadline_us(timeout_us);
    while (smp_checked_in() < count)
        if (rdtsc() > end)
            return false;
        else
            cpu_relax();
    return true;
}

unsigned smp_boot(enum smp_mode mode, bool x2apic)
{
    const struct madt_info *m = madt();
    if (!m->found) {
        report_fail("smp: no MADT, so no APIC IDs to start");
        return 1;
    }
    if (x2apic && !apic_is_x2apic() && !apic_enable_x2apic()) {
        report_fail("smp: x2APIC mode asked for, but CPUID.1:ECX[21] is clear");
        return 1;
    }
    uint32_t me = apic_id();
    unsigned aps = m->cpus > 0 ? m->cpus - 1 : 0;
    smp_prepare(aps, x2apic);
    bool icr_ok = true;
    if (mode == SMP_BROADCAST) {
        icr_ok = smp_init_sipi_broadcast(TRAMPOLINE_SIPI_VECTOR);
    } else {
        for (unsigned i = 0; i < m->cpus && i < PC_MAX_CPUS; i++)
            if (m->apic_ids[i] != me)
                icr_ok &= smp_init_sipi(m->apic_ids[i], TRAMPOLINE_SIPI_VECTOR);
    }
    if (!icr_ok)
        report_fail("smp: the ICR's delivery status stayed busy after an INIT or SIPI");
    /* A second, plus time for slow (TCG, nested) hosts to start threads. */
    if (!smp_wait_checked_in(aps, 1000000u + 20000u * aps))
        report_fail("smp: %u of %u APs checked in", smp_checked_in(), aps);
    return smp_cpus();
}

bool smp_run_on(unsigned cpu, void (*fn)(void *), void *arg)
{
    struct pc_cpu *c = &pc_cpus[cpu];
    if (c == this_cpu()) {
        fn(arg);
        return true;
    }
    uint32_t done = atomic_load(&c->work_done);
    c->work_arg = arg;
    __atomic_store_n(&c->work_fn, fn, __ATOMIC_RELEASE);
    apic_icr_send(c->apic_id, APIC_DM_FIXED | SMP_WAKE_VECTOR, ICR_TIMEOUT_US);
    uint64_t end = tsc_deadline_us(5000000u);
    while (atomic_load(&c->work_done) == done) {
        if (rdtsc() > end) {
            report_fail("smp: CPU %u (APIC ID %u) did not run posted work within 5 s", cpu, c->apic_id);
            return false;
        }
        cpu_relax();
    }
    return true;
}
