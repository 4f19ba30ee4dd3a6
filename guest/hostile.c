/*
 * hostile: a guest that tries to hurt the VMM, one way per mode. Every mode
 * must end as a guest fault (exit 126): either the VMM stops the attack
 * itself (a write to its read-only page tables, a shootdown never
 * acknowledged) or the attack runs its course and the guest then triple
 * faults, which the VMM must still be alive to report.
 *
 * Command line: one mode word.
 *   tables-ones|tables-zeros|tables-self|tables-cross
 *                   load page tables of our own, find the tables the VMM's
 *                   CR3 leads to, and overwrite every entry of them with
 *                   all-ones, zeros, pointers to their own frame, or
 *                   pointers to the next table found (not executable), then
 *                   go back to the VMM's CR3 with no IDT: a triple fault
 *   cr3-own         our own tables: read every VMM table, scribble on the
 *                   region's data frames, then go back to the VMM's tables
 *   slots           garbage in every shootdown slot, the mailbox, the shadow
 *                   info and the unmap counters, then host operations that
 *                   shoot down (shadow mode)
 *   noack           vCPU 1 never acknowledges a shootdown; vCPU 0 migrates a
 *                   page vCPU 1 touched until the VMM gives up (shadow mode)
 *   exceptions      40000 recoverable exception reports, shared among the vCPUs
 *   hypercalls      wild hypercall blocks from vCPU 0 (every call number at
 *                   addresses in and out of RAM, in the VMM's tables, across
 *                   the end of RAM) while the others flood calls
 *   verify          the largest VERIFY from every vCPU at once, then once more
 *   shootdown-triple vCPU 1 triple faults while vCPU 0 shoots down
 * Exit 2 (through the debug-exit port) for an unknown mode.
 */
#include "hostile.h"
#include "internal.h"
#include "rt.h"

static struct rt_barrier barrier;
static uint32_t attack_done;
static uint32_t v1_touches;
static uint32_t bystanders; /* vCPUs in bystander() that have read what they need */

static struct hv_stamp stamps[HV_VERIFY_MAX];

static void fill(void *p, uint64_t bytes, uint64_t v)
{
    volatile uint64_t *w = p;
    for (uint64_t i = 0; i < bytes / 8; i++)
        w[i] = v ^ i;
}

static RT_NORETURN void slots_mode(const struct guest_boot *boot)
{
    struct hv_shadow_info *sh = (struct hv_shadow_info *)(uintptr_t)boot->shadow;
    const uint64_t region = sh->region_base, pages = sh->region_size / 4096;
    void *slots = (void *)(uintptr_t)sh->slots;
    void *started = (void *)(uintptr_t)sh->unmap_started, *done = (void *)(uintptr_t)sh->unmap_done;
    for (uint64_t p = 0; p < 16 && p < pages; p++)
        *(volatile uint64_t *)(uintptr_t)(region + p * 4096) = p;
    while (__atomic_load_n(&bystanders, __ATOMIC_ACQUIRE) < boot->ncpus - 1)
        cpu_relax();
    fill(slots, 64ull * boot->ncpus, ~0ull);
    fill(started, pages * 8, ~0ull);
    fill(done, pages * 8, 0x8000000000000000ull);
    fill(&sh->mailbox, sizeof(sh->mailbox), ~0ull);
    fill(sh, 6 * 8, 0x4141414141414141ull); /* region_base .. tsc_khz */
    printf("hostile: slots, mailbox, shadow info and unmap counters overwritten; shooting down\n");
    for (uint64_t i = 0; i < 200; i++) {
        uint64_t a = region + (i % 16) * 4096, changed;
        *(volatile uint64_t *)(uintptr_t)a = i;
        rt_host_op(HV_HOST_MIGRATE, a, 0, &changed);
        fill(slots, 64ull * boot->ncpus, i & 1 ? 0 : ~0ull);
    }
    triple_fault();
}

static RT_NORETURN void noack_mode(const struct guest_boot *boot)
{
    uint64_t page = boot->shadow->region_base;
    if (boot->vcpu == 1) {
        rt_this_cpu()->slot = 0; /* the runtime's NMI handler now returns without acknowledging */
        (void)*(volatile uint64_t *)(uintptr_t)page;
        __atomic_store_n(&v1_touches, 1, __ATOMIC_RELEASE);
        for (;;)
            cpu_relax(); /* in guest mode for good, no exits */
    }
    while (!__atomic_load_n(&v1_touches, __ATOMIC_ACQUIRE))
        cpu_relax();
    printf("hostile: vcpu 1 no longer acknowledges; migrating the page it touched\n");
    for (uint64_t i = 0;; i++) {
        *(volatile uint64_t *)(uintptr_t)page = i;
        uint64_t changed;
        rt_host_op(HV_HOST_MIGRATE, page, 0, &changed);
    }
}

/* Every vCPU sends its share of the reports: the VMM limits their lines per
 * VM, so its output must count all of them in one line. */
static RT_NORETURN void exceptions_mode(const struct guest_boot *boot)
{
    static uint32_t vcpus_done;
    const uint32_t share = 40000 / boot->ncpus;
    struct hv_call_exception e;
    memset(&e, 0, sizeof(e));
    e.hdr.nr = HV_CALL_EXCEPTION;
    e.hdr.size = sizeof(e);
    e.vector = 6;
    e.flags = HV_EXC_RECOVERABLE;
    for (uint32_t i = 0; i < share; i++) {
        e.rip = i;
        hv_call(&e.hdr);
    }
    __atomic_fetch_add(&vcpus_done, 1, __ATOMIC_RELEASE);
    if (boot->vcpu != 0)
        halt_forever();
    while (__atomic_load_n(&vcpus_done, __ATOMIC_ACQUIRE) != boot->ncpus)
        cpu_relax();
    printf("hostile: %u exception reports sent by %u vCPUs\n", share * boot->ncpus, boot->ncpus);
    triple_fault();
}

/* A block of `size` bytes at `gpa` claiming call `nr`, where we can write. */
static uint32_t call_at(uint64_t gpa, uint32_t nr, uint32_t size, int write)
{
    if (write) {
        volatile uint32_t *h = (volatile uint32_t *)(uintptr_t)gpa;
        h[0] = nr;
        h[1] = size;
    }
    return hv_call_raw((uint32_t)gpa);
}

static RT_NORETURN void hypercalls_mode(const struct guest_boot *boot)
{
    static uint8_t block[8192] __attribute__((aligned(4096)));
    if (boot->vcpu != 0) {
        struct hv_call_page_fault pf;
        for (uint32_t i = 0; !__atomic_load_n(&attack_done, __ATOMIC_ACQUIRE); i++) {
            memset(&pf, 0, sizeof(pf));
            pf.hdr.nr = i % 8;
            pf.hdr.size = sizeof(pf);
            pf.address = (boot->shadow ? boot->shadow->region_base : 0) + (uint64_t)i * 4096 * 7919;
            pf.error_code = i;
            hv_call(&pf.hdr);
        }
        halt_forever();
    }
    uint64_t cr3 = read_cr3() & PTE_ADDR;
    const uint64_t wild[] = {0, 1, 4095, 4096 - 4, 0x60000 - 2, cr3, cr3 + 4088, boot->ram_size - 8,
                             boot->ram_size - 4, boot->ram_size, 0xfffffff0ull, 0xffffffffull, 0x80000000ull};
    uint32_t calls = 0;
    for (uint32_t nr = 0; nr < 12; nr++)
        for (uint32_t k = 0; k < sizeof(wild) / sizeof(wild[0]); k++, calls++)
            call_at(wild[k], nr, 64, 0);
    /* Blocks we own with every size, the largest counts and the wildest fields. */
    for (uint32_t nr = 0; nr < 12; nr++)
        for (uint32_t size = 0; size <= 256; size += 8, calls++) {
            fill(block, sizeof(block), 0xffffffff00000000ull + nr * size);
            call_at((uint64_t)(uintptr_t)block + 4096 - (size & 8), nr, size, 1);
        }
    struct hv_call_verify *v = (struct hv_call_verify *)block;
    memset(v, 0, sizeof(*v));
    v->hdr.nr = HV_CALL_VERIFY;
    v->hdr.size = sizeof(*v);
    const uint64_t tables_at[] = {cr3, boot->ram_size - 24, 0, (uint64_t)(uintptr_t)block};
    for (uint32_t k = 0; k < 4; k++, calls++) {
        v->table = tables_at[k];
        v->count = HV_VERIFY_MAX;
        hv_call(&v->hdr);
    }
    printf("hostile: %u wild hypercalls made\n", calls);
    __atomic_store_n(&attack_done, 1, __ATOMIC_RELEASE);
    triple_fault();
}

/* The largest table the VMM accepts, every stamp valid and true: vCPU 0
 * writes the first 4096 words of the region (8 pages, each a host fault on
 * first write) and the stamps cycle over the region's first MiB, naming
 * those words with their values and the rest with 0 (never written), so a
 * call that gets through compares all 2^20 and finds nothing lost. The
 * vCPUs call at once (one call runs at a time, the others are answered
 * BUSY), then vCPU 0 once more alone. */
/* One HV_CALL_VERIFY of the whole table; its outcome added to the counts. */
static void verify_all(uint32_t *answered, uint32_t *busy, uint32_t *other, uint64_t *checked, uint64_t *lost)
{
    struct hv_call_verify v;
    memset(&v, 0, sizeof(v));
    v.hdr.nr = HV_CALL_VERIFY;
    v.hdr.size = sizeof(v);
    v.table = (uint64_t)(uintptr_t)stamps;
    v.count = HV_VERIFY_MAX;
    const uint32_t status = hv_call(&v.hdr);
    if (status == HV_OK) {
        __atomic_fetch_add(answered, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(checked, v.checked, __ATOMIC_RELAXED);
        __atomic_fetch_add(lost, v.lost, __ATOMIC_RELAXED);
    } else {
        __atomic_fetch_add(status == HV_E_BUSY ? busy : other, 1, __ATOMIC_RELAXED);
    }
}

static RT_NORETURN void verify_mode(const struct guest_boot *boot)
{
    static uint32_t answered, busy, other;
    static uint64_t checked, lost;
    const uint64_t base = boot->shadow ? boot->shadow->region_base : 0;
    /* Identity mode answers NOT_SHADOW before it reads a stamp: the 24 MiB
     * table stays untouched there (kvm_pvm took 25 s to fault it in). */
    if (boot->vcpu == 0 && boot->shadow) {
        for (uint64_t k = 0; k < 4096; k++)
            *(volatile uint64_t *)(uintptr_t)(base + 8 * k) = k + 1;
        for (uint64_t i = 0; i < HV_VERIFY_MAX; i++) {
            const uint64_t word = i % ((1u << 20) / 8);
            stamps[i].address = base + 8 * word;
            stamps[i].value = word < 4096 ? word + 1 : 0;
            stamps[i].unmap_done = 0;
        }
    }
    rt_barrier_wait(&barrier, boot->ncpus);
    verify_all(&answered, &busy, &other, &checked, &lost);
    rt_barrier_wait(&barrier, boot->ncpus);
    if (boot->vcpu != 0)
        halt_forever();
    verify_all(&answered, &busy, &other, &checked, &lost); /* alone: the buffer is reused */
    printf("hostile: %u verify calls of %u stamps (one from each vCPU at once, then one from vCPU 0): %u answered "
           "(checked %lu, lost %lu), %u busy, %u other\n", boot->ncpus + 1, HV_VERIFY_MAX, answered,
           (unsigned long)checked, (unsigned long)lost, busy, other);
    triple_fault();
}

static RT_NORETURN void shootdown_triple_mode(const struct guest_boot *boot)
{
    uint64_t page = boot->shadow->region_base;
    if (boot->vcpu == 1) {
        for (uint32_t i = 0; i < 200; i++) {
            (void)*(volatile uint64_t *)(uintptr_t)page;
            __atomic_store_n(&v1_touches, i + 1, __ATOMIC_RELEASE);
        }
        triple_fault();
    }
    while (!__atomic_load_n(&v1_touches, __ATOMIC_ACQUIRE))
        cpu_relax();
    for (uint64_t i = 0;; i++) {
        *(volatile uint64_t *)(uintptr_t)page = i;
        uint64_t changed;
        rt_host_op(HV_HOST_MIGRATE, page, 0, &changed);
    }
}

/* vCPUs with nothing to do in a mode keep faulting the region in. */
static RT_NORETURN void bystander(const struct guest_boot *boot)
{
    if (!boot->shadow)
        halt_forever();
    const uint64_t region = boot->shadow->region_base; /* before a mode overwrites it */
    __atomic_fetch_add(&bystanders, 1, __ATOMIC_RELEASE);
    for (uint64_t i = 0;; i++)
        (void)*(volatile uint64_t *)(uintptr_t)(region + (i % 256) * 4096);
}

int guest_main(const struct guest_boot *boot)
{
    const char *c = boot->cmdline;
    static const char *const shadow_only[] = {"slots", "noack", "shootdown-triple"};
    for (uint32_t i = 0; i < 3; i++)
        if (rt_arg_word(c, shadow_only[i]) && (!boot->shadow || boot->ncpus < 2)) {
            if (boot->vcpu == 0)
                printf("hostile: %s needs --paging shadow and 2 or more vCPUs\n", shadow_only[i]);
            return 2;
        }
    if (rt_arg_word(c, "exceptions"))
        exceptions_mode(boot);
    if (rt_arg_word(c, "hypercalls"))
        hypercalls_mode(boot);
    if (rt_arg_word(c, "verify"))
        verify_mode(boot);
    if (rt_arg_word(c, "noack") && boot->vcpu <= 1)
        noack_mode(boot);
    if (rt_arg_word(c, "shootdown-triple") && boot->vcpu <= 1)
        shootdown_triple_mode(boot);
    if (boot->vcpu != 0)
        bystander(boot);
    if (rt_arg_word(c, "tables-ones"))
        tables_mode("ones");
    if (rt_arg_word(c, "tables-zeros"))
        tables_mode("zeros");
    if (rt_arg_word(c, "tables-self"))
        tables_mode("self");
    if (rt_arg_word(c, "tables-cross"))
        tables_mode("cross");
    if (rt_arg_word(c, "cr3-own"))
        cr3_own_mode(boot);
    if (rt_arg_word(c, "slots"))
        slots_mode(boot);
    printf("hostile: unknown command line '%s' (want tables-ones, tables-zeros, tables-self, tables-cross, cr3-own, "
           "slots, noack, exceptions, hypercalls, verify or shootdown-triple)\n", c);
    return 2;
}
