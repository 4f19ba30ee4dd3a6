/*
 * touch: each vCPU writes one word into each of its own fresh pages, then
 * reads them all back. In shadow mode the pages are in the demand-mapped
 * region and every first touch is a #PF the VMM resolves; in identity mode
 * they are fresh guest RAM between the image and the stacks, so KVM's own
 * paging (EPT/NPT) faults them in. vCPU 0 reports the first-touch time per
 * page (TSC, and ns when the VMM gave the TSC frequency) and the faults taken.
 *
 * Under host churn (vmm run --churn) a page the host unmapped after the
 * write reads 0; that is a discard, counted apart, not an error (abi.h,
 * unmap_started). A write the host refuses while it holds the page
 * read-only is retried.
 *
 * Command line: pages=N (per vCPU; default: as many as fit, at most 256).
 * Exit 0 when every word read back as written (or discarded), 1 otherwise,
 * 2 for bad arguments.
 */
#include "rt.h"

#define PAGE 4096ull
#define IDENTITY_BASE (16ull << 20) /* identity mode: fresh RAM starts here */

static struct rt_barrier barrier;
static uint64_t start_tsc;
static uint64_t cycles[RT_MAX_CPUS];
static uint64_t end_tsc[RT_MAX_CPUS];
static uint64_t faults[RT_MAX_CPUS];
static uint32_t bad_words, discarded;

int guest_main(const struct guest_boot *boot)
{
    const struct hv_shadow_info *sh = boot->shadow;
    uint32_t n = boot->ncpus, v = boot->vcpu;
    uint64_t base, size;
    if (sh) {
        base = sh->region_base;
        size = sh->region_size;
    } else {
        /* Below the stacks (which hang from min(RAM, 4 GiB)), above the image. */
        uint64_t top = boot->ram_size < (4ull << 30) ? boot->ram_size : (4ull << 30);
        top -= (uint64_t)n * HV_STACK_SIZE;
        base = IDENTITY_BASE;
        size = top > base ? (top - base) & ~(PAGE - 1) : 0;
    }
    uint64_t pages = size / PAGE / n;
    if (pages > 256)
        pages = 256;
    int arg = rt_arg_u64(boot->cmdline, "pages", &pages);
    if (arg < 0 || pages == 0 || pages * n > size / PAGE) {
        if (v == 0)
            printf("touch: pages=N must be 1..%lu for %u vCPUs (command line '%s')\n",
                   (unsigned long)(size / PAGE / n), n, boot->cmdline);
        if (v == 0)
            return 2;
        halt_forever();
    }

    volatile uint64_t *mine = (volatile uint64_t *)(uintptr_t)(base + (uint64_t)v * pages * PAGE);
    rt_fault_retry_refused(1);
    rt_barrier_wait(&barrier, n);
    if (v == 0)
        __atomic_store_n(&start_tsc, rdtsc(), __ATOMIC_RELEASE);
    uint64_t f0 = rt_page_faults();
    uint64_t t0 = rdtsc();
    for (uint64_t i = 0; i < pages; i++)
        mine[i * PAGE / 8] = (uint64_t)v << 32 | (i + 1);
    end_tsc[v] = rdtsc();
    cycles[v] = end_tsc[v] - t0;
    faults[v] = rt_page_faults() - f0;
    for (uint64_t i = 0; i < pages; i++) {
        uint64_t got = mine[i * PAGE / 8];
        if (got == ((uint64_t)v << 32 | (i + 1)))
            continue;
        uint64_t page = ((uint64_t)v * pages + i);
        if (got == 0 && sh && ((const volatile uint64_t *)(uintptr_t)sh->unmap_started)[page] != 0)
            __atomic_fetch_add(&discarded, 1, __ATOMIC_RELAXED);
        else
            __atomic_fetch_add(&bad_words, 1, __ATOMIC_RELAXED);
    }
    rt_barrier_wait(&barrier, n);
    if (v != 0)
        halt_forever();

    /* Per vCPU: its own first touches, one after the other. In all: pages
     * touched from the common start to the last vCPU's end (vCPU threads
     * share the host's cores, so the per-vCPU times include waiting). */
    uint64_t total_faults = 0, last_end = 0, min_cycles = ~0ull;
    for (uint32_t i = 0; i < n; i++) {
        total_faults += faults[i];
        if (end_tsc[i] > last_end)
            last_end = end_tsc[i];
        if (cycles[i] < min_cycles)
            min_cycles = cycles[i];
    }
    uint64_t touched = pages * n;
    uint64_t wall = last_end - start_tsc;
    printf("touch: %s paging, %u vCPUs x %lu pages: %lu page faults sent to the VMM\n", sh ? "shadow" : "identity", n,
           (unsigned long)pages, (unsigned long)total_faults);
    printf("touch: %lu TSC cycles per first touch in all (%lu cycles for %lu pages), fastest vCPU %lu cycles per page",
           (unsigned long)(wall / touched), (unsigned long)wall, (unsigned long)touched,
           (unsigned long)(min_cycles / pages));
    if (sh && sh->tsc_khz)
        printf("; %lu ns per first touch in all, %lu first touches per second",
               (unsigned long)(wall * 1000000 / sh->tsc_khz / touched),
               (unsigned long)(touched * sh->tsc_khz * 1000 / (wall ? wall : 1)));
    printf("\n");
    if (bad_words) {
        printf("touch: %u words did not read back as written\n", bad_words);
        return 1;
    }
    printf("touch: all %lu pages read back ok (%u discarded by host unmaps)\n", (unsigned long)touched, discarded);
    return 0;
}
