/*
 * coherence: while the host churns the region (vmm run --churn ...), each
 * vCPU keeps writing (vCPU, sequence) stamps into its own pages and into its
 * own word of some pages every vCPU shares. Before each write it reads the
 * word back: it must still hold the previous stamp, or 0 when a host unmap
 * may have discarded the page since (abi.h, unmap_started/unmap_done).
 * At the end vCPU 0 hands the last stamp of every word, and the read-back
 * losses, to the VMM (HV_CALL_VERIFY), which reads each word through the
 * host tables and reports lost_writes. A stale TLB entry (a missed
 * shootdown) sends writes to a frame the host has moved or reused: the end
 * check finds them when they were the last, the read-back when a later
 * access went through a fresh translation.
 *
 * Command line: own=N pages per vCPU (default 4), shared=N pages shared by
 * all (default 8), ms=N run time (default 1000; needs the TSC frequency,
 * else rounds=N, default 20000, bounds the run).
 * Shadow mode only. Exit 0 when no write was lost, 1 otherwise, 2 for bad
 * arguments or identity mode.
 */
#include "rt.h"

#define PAGE 4096ull
#define MAX_OWN 16
#define MAX_SHARED 16
#define WORDS_PER_PAGE 512

struct word {
    volatile uint64_t *addr;
    uint64_t page; /* index in the region, for unmap_done */
};

static struct rt_barrier barrier;
static struct hv_stamp stamps[RT_MAX_CPUS * (MAX_OWN + MAX_SHARED)];
static uint64_t rounds_done[RT_MAX_CPUS];
static uint64_t seen_lost[RT_MAX_CPUS];
static uint32_t reported;

static int fail_args(const struct guest_boot *boot, const char *why)
{
    if (boot->vcpu == 0) {
        printf("coherence: %s (command line '%s')\n", why, boot->cmdline);
        return 2;
    }
    halt_forever();
}

int guest_main(const struct guest_boot *boot)
{
    const struct hv_shadow_info *sh = boot->shadow;
    uint32_t n = boot->ncpus, v = boot->vcpu;
    if (!sh)
        return fail_args(boot, "needs shadow paging (vmm run --paging shadow)");
    uint64_t own = 4, shared = 8, ms = 1000, max_rounds = 20000;
    if (rt_arg_u64(boot->cmdline, "own", &own) < 0 || rt_arg_u64(boot->cmdline, "shared", &shared) < 0 ||
        rt_arg_u64(boot->cmdline, "ms", &ms) < 0 || rt_arg_u64(boot->cmdline, "rounds", &max_rounds) < 0)
        return fail_args(boot, "malformed own=, shared=, ms= or rounds=");
    if (own > MAX_OWN || shared > MAX_SHARED || own + shared == 0)
        return fail_args(boot, "own= and shared= must be 0..16, not both 0");
    /* Shared pages come in groups of 512 words: vCPU v writes word v % 512
     * of each shared page of group v / 512. */
    uint64_t groups = (n + WORDS_PER_PAGE - 1) / WORDS_PER_PAGE;
    uint64_t region_pages = sh->region_size / PAGE;
    uint64_t needed = shared * groups + own * n;
    if (needed > region_pages)
        return fail_args(boot, "the region is too small for own= x vCPUs + shared= pages; raise --region");

    struct word words[MAX_OWN + MAX_SHARED];
    uint64_t nwords = 0;
    for (uint64_t j = 0; j < shared; j++) {
        uint64_t page = (v / WORDS_PER_PAGE) * shared + j;
        words[nwords].page = page;
        words[nwords++].addr = (volatile uint64_t *)(uintptr_t)(sh->region_base + page * PAGE + (v % WORDS_PER_PAGE) * 8);
    }
    for (uint64_t j = 0; j < own; j++) {
        uint64_t page = shared * groups + (uint64_t)v * own + j;
        words[nwords].page = page;
        words[nwords++].addr = (volatile uint64_t *)(uintptr_t)(sh->region_base + page * PAGE);
    }
    struct hv_stamp *mine = &stamps[(uint64_t)v * (MAX_OWN + MAX_SHARED)];
    for (uint64_t i = 0; i < nwords; i++)
        mine[i] = (struct hv_stamp){(uint64_t)(uintptr_t)words[i].addr, 0, 0};
    const volatile uint64_t *unmap_done = (const volatile uint64_t *)(uintptr_t)sh->unmap_done;
    const volatile uint64_t *unmap_started = (const volatile uint64_t *)(uintptr_t)sh->unmap_started;
    uint64_t lost = 0;

    rt_fault_retry_refused(1); /* a page the churn holds read-only is released again */
    rt_barrier_wait(&barrier, n);
    uint64_t deadline = sh->tsc_khz ? rdtsc() + ms * sh->tsc_khz : 0;
    uint64_t round = 0;
    for (;;) {
        round++;
        for (uint64_t i = 0; i < nwords; i++) {
            uint64_t stamp = (uint64_t)(v + 1) << 40 | round;
            uint64_t cur = *words[i].addr;
            if (cur != mine[i].value &&
                !(cur == 0 && __atomic_load_n(&unmap_started[words[i].page], __ATOMIC_ACQUIRE) > mine[i].unmap_done)) {
                lost++;
                if (__atomic_fetch_add(&reported, 1, __ATOMIC_RELAXED) < 8)
                    printf("coherence: vCPU %u: 0x%lx reads 0x%lx, last written 0x%lx\n", v,
                           (unsigned long)mine[i].address, (unsigned long)cur, (unsigned long)mine[i].value);
            }
            mine[i].unmap_done = __atomic_load_n(&unmap_done[words[i].page], __ATOMIC_ACQUIRE);
            *words[i].addr = stamp;
            mine[i].value = stamp;
        }
        if (deadline ? rdtsc() >= deadline : round >= max_rounds)
            break;
    }
    rounds_done[v] = round;
    seen_lost[v] = lost;
    rt_barrier_wait(&barrier, n);
    if (v != 0)
        halt_forever();

    /* Compact the table: each vCPU filled nwords entries of its block. */
    uint64_t count = 0, total_rounds = 0, guest_lost = 0;
    for (uint32_t c = 0; c < n; c++) {
        for (uint64_t i = 0; i < nwords; i++)
            stamps[count++] = stamps[(uint64_t)c * (MAX_OWN + MAX_SHARED) + i];
        total_rounds += rounds_done[c];
        guest_lost += seen_lost[c];
    }
    struct hv_call_verify call = {
        .hdr = {HV_CALL_VERIFY, sizeof(call)},
        .table = (uint64_t)(uintptr_t)stamps,
        .count = count,
        .guest_lost = guest_lost < HV_VERIFY_MAX ? guest_lost : HV_VERIFY_MAX,
    };
    uint32_t status = hv_call(&call.hdr);
    printf("coherence: %u vCPUs, %lu words each (%lu own pages, %lu shared), %lu rounds in all, %lu shootdown NMIs on vCPU 0\n",
           n, (unsigned long)nwords, (unsigned long)own, (unsigned long)shared, (unsigned long)total_rounds,
           (unsigned long)rt_shootdown_nmis());
    if (status != HV_OK) {
        printf("coherence: HV_CALL_VERIFY failed with status %u\n", status);
        return 1;
    }
    printf("coherence: %lu stamps checked, %lu losses seen while running, lost_writes=%lu\n", (unsigned long)call.checked,
           (unsigned long)guest_lost, (unsigned long)call.lost);
    return call.lost == 0 && call.checked == count ? 0 : 1;
}
