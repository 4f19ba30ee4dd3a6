/*
 * The local APIC timer: one-shot, periodic and TSC-deadline modes. The
 * handler timestamps each interrupt with the TSC (calibrated against the
 * PIT), so the checks are about real time, not the APIC's idea of it;
 * the periodic timer is also timed by its own current count.
 */
#include "apic_tests.h"

#define ONESHOT_US 5000u
#define PERIOD_US 5000u
#define MAX_STAMPS 12u

static volatile uint32_t fired;
static uint64_t stamps[MAX_STAMPS];

static void timer_handler(struct pc_regs *regs)
{
    (void)regs;
    uint32_t n = fired;
    if (n < MAX_STAMPS)
        stamps[n] = rdtsc();
    fired = n + 1;
    apic_eoi();
}

static uint32_t count_for_us(uint64_t timer_hz, uint64_t us) { return (uint32_t)(timer_hz * us / 1000000u); }

void test_timer_oneshot(const char *mode, uint64_t timer_hz)
{
    irq_set_handler(TIMER_VECTOR, timer_handler);
    uint32_t count = count_for_us(timer_hz, ONESHOT_US);
    struct apic_timer_sample s1, s2;
    uint64_t t0;
    /* Read the count twice early in the run; if the host stalled us so long
     * that the timer may have run out before the reads, start again. */
    for (unsigned attempt = 0;; attempt++) {
        fired = 0;
        t0 = rdtsc();
        apic_timer_start(TIMER_VECTOR, APIC_TIMER_ONESHOT, count);
        s1 = apic_timer_sample(2);
        udelay(100);
        s2 = apic_timer_sample(2);
        if (tsc_to_us(s2.tsc + s2.width - t0) < ONESHOT_US / 2 || attempt == 4)
            break;
        apic_timer_stop();
        wait_for_count(&fired, 2, 2u * ONESHOT_US); /* let a pending one in before the next try */
    }
    report(s1.count <= count && s2.count < s1.count && s2.count > 0,
           "%s: one-shot: the current count decreases (%u, then %u 100 us later, initial %u)", mode, s1.count,
           s2.count, count);
    uint32_t n = wait_for_count(&fired, 1, ARRIVAL_US);
    uint64_t after_us = n ? tsc_to_us(stamps[0] - t0) : 0;
    report(n >= 1 && after_us >= ONESHOT_US * 95u / 100u,
           "%s: one-shot: fires, not early (after %llu us, programmed %u us)", mode, (unsigned long long)after_us,
           ONESHOT_US);
    report(apic_read(APIC_TIMER_CURRENT) == 0, "%s: one-shot: current count is 0 once it fired (%u)", mode,
           apic_read(APIC_TIMER_CURRENT));
    n = wait_for_count(&fired, 2, AFTERWARDS_US);
    report(n == 1, "%s: one-shot: fires exactly once (%u interrupts, counting %u us more)", mode, n, AFTERWARDS_US);
    apic_timer_stop();
}

/* The periodic timer's current count is a sawtooth: between two reads
 * taken dt apart it must have gone down by dt (in timer ticks) modulo the
 * initial count. This times the timer at its source, which a host that
 * preempts the vCPU (QEMU TCG on a busy machine: interrupts arrive late or
 * coalesce) cannot blur. Returns the pairs that disagree by more than 2%
 * of the period (plus the reads' own uncertainty). A read of 0 is the
 * instant of the reload, which an emulated timer reaches only when its host
 * gets round to it (KVM reads 0 from expiry until it re-arms; in a nested
 * host that took 0.3 ms once): such a pair is not compared. */
static unsigned sawtooth_errors(uint64_t timer_hz, uint32_t initial, unsigned *pairs)
{
    unsigned bad = 0;
    *pairs = 0;
    struct apic_timer_sample prev = apic_timer_sample(4);
    for (unsigned i = 0; i < 12; i++) {
        udelay(PERIOD_US * 37u / 100u); /* land at different phases */
        struct apic_timer_sample s = apic_timer_sample(4);
        if (prev.count == 0 || s.count == 0) {
            prev = s;
            continue;
        }
        uint64_t width = tsc_to_us(prev.width + s.width) * timer_hz / 1000000u;
        uint64_t dt = tsc_to_us(s.tsc - prev.tsc) * timer_hz / 1000000u;
        /* counts run from `initial` down to 1, then reload */
        uint64_t dropped = ((uint64_t)prev.count + initial - s.count) % initial;
        uint64_t diff = (dt % initial + initial - dropped) % initial;
        if (diff > initial / 2)
            diff = initial - diff;
        if (diff > initial / 50 + width && !bad++)
            report_info("periodic: %llu ticks apart, the count went %u -> %u", (unsigned long long)dt, prev.count,
                        s.count);
        (*pairs)++;
        prev = s;
    }
    return bad;
}

void test_timer_periodic(const char *mode, uint64_t timer_hz)
{
    irq_set_handler(TIMER_VECTOR, timer_handler);
    fired = 0;
    uint32_t initial = count_for_us(timer_hz, PERIOD_US);
    uint64_t t0 = rdtsc();
    apic_timer_start(TIMER_VECTOR, APIC_TIMER_PERIODIC, initial);
    uint32_t n = wait_for_count(&fired, MAX_STAMPS, 20u * MAX_STAMPS * PERIOD_US);
    unsigned pairs, bad = sawtooth_errors(timer_hz, initial, &pairs);
    uint64_t elapsed_us = tsc_to_us(rdtsc() - t0);
    uint32_t total = fired;
    apic_timer_stop();
    report(n >= 5, "%s: periodic: fires at least 5 times (%u times)", mode, n);
    report(bad == 0 && pairs >= 6,
           "%s: periodic: the current count reloads every %u us (%u of %u pairs of reads disagree; at least 6 of 12 "
           "compared)",
           mode, PERIOD_US, bad, pairs);
    /* Late interrupts coalesce, but none may come faster than the period. */
    report(total <= elapsed_us / PERIOD_US + 1, "%s: periodic: at most one interrupt per period (%u in %llu us)", mode,
           total, (unsigned long long)elapsed_us);
    /* Take what fired before the stop (pending while interrupts were off
     * for the sawtooth reads): a period's worth. */
    wait_for_count(&fired, UINT32_MAX, PERIOD_US);
    uint32_t before = fired;
    n = wait_for_count(&fired, before + 1, 5u * PERIOD_US);
    report(n == before, "%s: periodic: stops when the initial count is set to 0 (%u more interrupts)", mode,
           n - before);
}

void test_timer_tsc_deadline(const char *mode)
{
    if (!(cpuid(1, 0).c & CPUID_1_ECX_TSC_DEADLINE)) {
        report_skip("%s: TSC-deadline timer: CPUID.1:ECX[24] is clear on '%s' (QEMU 7.2 TCG has none)", mode,
                    hypervisor_name());
        return;
    }
    irq_set_handler(TIMER_VECTOR, timer_handler);
    fired = 0;
    apic_timer_start(TIMER_VECTOR, APIC_TIMER_TSC_DEADLINE, 0);
    uint64_t deadline = tsc_deadline_us(ONESHOT_US);
    wrmsr(MSR_TSC_DEADLINE, deadline);
    uint64_t armed = rdmsr(MSR_TSC_DEADLINE);
    report(armed == deadline, "%s: TSC-deadline: IA32_TSC_DEADLINE reads back the armed deadline (0x%llx, found 0x%llx)",
           mode, (unsigned long long)deadline, (unsigned long long)armed);
    /* The handler's own TSC stamp says whether it came before the deadline
     * (a check of the TSC in a loop here could be preempted, on a busy or
     * emulated host, long enough to count a punctual interrupt as early). */
    irq_enable();
    uint32_t n = wait_for_count(&fired, 1, ARRIVAL_US);
    irq_disable();
    int64_t early_us = n && stamps[0] < deadline ? (int64_t)tsc_to_us(deadline - stamps[0]) : 0;
    int64_t late_us = n ? (int64_t)tsc_to_us(stamps[0] > deadline ? stamps[0] - deadline : 0) : -1;
    /* Late is bounded only by how long the host leaves the vCPU unscheduled
     * (32 ms seen in a one-CPU nested host): within the wait, it came. */
    report(n == 1 && stamps[0] >= deadline,
           "%s: TSC-deadline timer fires after the deadline, not before (%u interrupts, the first "
           "%lld us before and %lld us after it)",
           mode, n, (long long)early_us, (long long)late_us);
    uint64_t after = rdmsr(MSR_TSC_DEADLINE);
    report(after == 0, "%s: TSC-deadline: IA32_TSC_DEADLINE reads 0 once the timer fired (0x%llx)", mode,
           (unsigned long long)after);

    fired = 0;
    wrmsr(MSR_TSC_DEADLINE, tsc_deadline_us(ONESHOT_US));
    wrmsr(MSR_TSC_DEADLINE, 0);
    n = wait_for_count(&fired, 1, AFTERWARDS_US);
    report(n == 0, "%s: TSC-deadline: writing 0 disarms the timer (%u interrupts)", mode, n);
    apic_timer_stop();
}
