/*
 * shootdown: TLB shootdown latency as the guest sees it. Every vCPU touches
 * one shared page of the region, then vCPUs 1..N-1 spin in guest mode while
 * vCPU 0 asks the host to migrate that page (HV_CALL_HOST_OP) again and
 * again: each call zaps the entry and interrupts every other vCPU with an
 * NMI, whose handler flushes and acknowledges before the call returns. The
 * time of an ECHO hypercall (the exit alone) is measured the same way and
 * reported beside it. Afterwards every other vCPU must have run the
 * shootdown handler and must read the page's current contents.
 *
 * Command line: iterations=N (default 200). Shadow mode only. Exit 0 when
 * the checks pass, 1 otherwise, 2 for bad arguments or identity mode.
 */
#include "rt.h"

#define MAX_SAMPLES 4096

static struct rt_barrier barrier;
static uint32_t done;
static uint64_t samples[MAX_SAMPLES];
static uint64_t nmis_seen[RT_MAX_CPUS];
static uint64_t value_seen[RT_MAX_CPUS];

static void sort(uint64_t *a, uint64_t n)
{
    for (uint64_t i = 1; i < n; i++) {
        uint64_t x = a[i], j = i;
        for (; j > 0 && a[j - 1] > x; j--)
            a[j] = a[j - 1];
        a[j] = x;
    }
}

static uint64_t ns(const struct hv_shadow_info *sh, uint64_t cycles)
{
    return sh->tsc_khz ? cycles * 1000000 / sh->tsc_khz : 0;
}

static void report(const struct hv_shadow_info *sh, const char *what, uint64_t *a, uint64_t n)
{
    sort(a, n);
    uint64_t p50 = a[n / 2], p99 = a[(n * 99) / 100 < n ? (n * 99) / 100 : n - 1];
    printf("shootdown: %-28s p50 %lu cycles (%lu ns), p99 %lu cycles (%lu ns)\n", what, (unsigned long)p50,
           (unsigned long)ns(sh, p50), (unsigned long)p99, (unsigned long)ns(sh, p99));
}

int guest_main(const struct guest_boot *boot)
{
    const struct hv_shadow_info *sh = boot->shadow;
    uint32_t n = boot->ncpus, v = boot->vcpu;
    uint64_t iterations = 200;
    if (!sh || rt_arg_u64(boot->cmdline, "iterations", &iterations) < 0 || iterations == 0 ||
        iterations > MAX_SAMPLES) {
        if (v != 0)
            halt_forever();
        printf("shootdown: needs --paging shadow and iterations=1..%u (command line '%s')\n", MAX_SAMPLES,
               boot->cmdline);
        return 2;
    }
    volatile uint64_t *page = (volatile uint64_t *)(uintptr_t)sh->region_base;
    if (v == 0)
        *page = 1;
    rt_barrier_wait(&barrier, n);
    (void)*page; /* every vCPU now may cache the translation */
    rt_barrier_wait(&barrier, n);

    if (v != 0) {
        while (!__atomic_load_n(&done, __ATOMIC_ACQUIRE))
            cpu_relax();
        nmis_seen[v] = rt_shootdown_nmis();
        value_seen[v] = *page;
        rt_barrier_wait(&barrier, n);
        halt_forever();
    }

    for (uint64_t i = 0; i < iterations; i++) {
        struct hv_call_echo e = {{HV_CALL_ECHO, sizeof(e)}, i, 0};
        uint64_t t0 = rdtsc();
        hv_call(&e.hdr);
        samples[i] = rdtsc() - t0;
    }
    report(sh, "ECHO hypercall (exit only)", samples, iterations);

    uint32_t failures = 0;
    for (uint64_t i = 0; i < iterations; i++) {
        *page = i + 2; /* fault the page back in (migrate leaves it unmapped in the shadow table) */
        uint64_t changed = 0, t0 = rdtsc();
        uint32_t status = rt_host_op(HV_HOST_MIGRATE, sh->region_base, 0, &changed);
        samples[i] = rdtsc() - t0;
        if (status != HV_OK || !changed)
            failures++;
    }
    char what[64];
    snprintf(what, sizeof(what), "migrate + shootdown to %u", n - 1);
    report(sh, what, samples, iterations);
    uint64_t final = iterations + 1;
    __atomic_store_n(&done, 1, __ATOMIC_RELEASE);
    rt_barrier_wait(&barrier, n);

    uint32_t no_nmi = 0, stale = 0;
    for (uint32_t c = 1; c < n; c++) {
        no_nmi += nmis_seen[c] == 0;
        stale += value_seen[c] != final;
    }
    printf("shootdown: %lu migrations (%u failed); %u of %u other vCPUs never ran the handler, %u read a stale value\n",
           (unsigned long)iterations, failures, no_nmi, n - 1, stale);
    return failures || no_nmi || stale ? 1 : 0;
}
