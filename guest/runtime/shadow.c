/* Shadow mode: #PF to the VMM, NMI shootdown requests (abi.h, "Shadow paging"). */
#include "internal.h"

const struct hv_shadow_info *rt_shadow;

/* Called once the IDT is loaded. The sequentially consistent store is a
 * full barrier: no walk of the region's tables can be done before the VMM
 * can see `ready` (abi.h). */
void rt_shadow_init_cpu(struct rt_cpu *cpu)
{
    cpu->slot = rt_shadow ? (struct hv_shootdown_slot *)(uintptr_t)rt_shadow->slots + cpu->index : NULL;
    if (cpu->slot)
        __atomic_store_n(&cpu->slot->ready, 1, __ATOMIC_SEQ_CST);
}

void rt_fault_retry_refused(int on) { rt_this_cpu()->retry_refused = on != 0; }

uint64_t rt_shootdown_nmis(void)
{
    struct hv_shootdown_slot *s = rt_this_cpu()->slot;
    return s ? __atomic_load_n(&s->nmis, __ATOMIC_RELAXED) : 0;
}

uint64_t rt_page_faults(void) { return rt_this_cpu()->page_faults; }

uint32_t rt_shadow_page_fault(struct rt_frame *f)
{
    struct hv_call_page_fault c;
    memset(&c, 0, sizeof(c));
    c.hdr.nr = HV_CALL_PAGE_FAULT;
    c.hdr.size = sizeof(c);
    c.address = read_cr2();
    c.error_code = (uint32_t)f->error_code;
    c.rip = f->rip;
    c.rsp = f->rsp;
    c.rflags = f->rflags;
    memcpy(c.gprs, f->gprs, sizeof(c.gprs));
    struct rt_cpu *cpu = rt_this_cpu();
    uint32_t backoff = 64; /* pauses between refused retries, doubling: each retry is a VM exit */
    for (;;) {
        cpu->page_faults++;
        uint32_t status = hv_call(&c.hdr);
        if (status == HV_OK) {
            /* The #PF already dropped any TLB entry for the address; this
             * also covers a translation another vCPU's fault upgraded. */
            invlpg(c.address);
            return HV_OK;
        }
        if (status != HV_E_REFUSED || !cpu->retry_refused)
            return status;
        for (uint32_t i = 0; i < backoff; i++)
            cpu_relax();
        if (backoff < 65536)
            backoff *= 2;
    }
}

static inline void reload_cr3(void) { write_cr3(read_cr3()); }

uint64_t rt_identity_cr3(void)
{
    static uint64_t pml4[512] __attribute__((aligned(4096)));
    static uint64_t pdpt[512] __attribute__((aligned(4096)));
    static uint64_t pd[4][512] __attribute__((aligned(4096)));
    static rt_spinlock lock;
    static uint32_t built;
    rt_spin_lock(&lock);
    if (!built) {
        for (uint64_t i = 0; i < 4; i++) {
            pdpt[i] = (uint64_t)(uintptr_t)pd[i] | PTE_P | PTE_RW;
            for (uint64_t j = 0; j < 512; j++)
                pd[i][j] = ((i << 30) | (j << 21)) | PTE_P | PTE_RW | PTE_PS;
        }
        pml4[0] = (uint64_t)(uintptr_t)pdpt | PTE_P | PTE_RW;
        built = 1;
    }
    rt_spin_unlock(&lock);
    return (uint64_t)(uintptr_t)pml4;
}

/* The seqlock reader of abi.h: flush what the current request lists, or
 * everything when the list cannot be trusted; then acknowledge. */
void rt_shootdown_nmi(void)
{
    struct hv_shootdown_slot *s = rt_this_cpu()->slot;
    const struct hv_shootdown_mailbox *m = &rt_shadow->mailbox;
    if (!s)
        return;
    __atomic_store_n(&s->nmis, s->nmis + 1, __ATOMIC_RELAXED);
    for (;;) {
        uint64_t r = __atomic_load_n(&s->request, __ATOMIC_ACQUIRE);
        if (r == __atomic_load_n(&s->ack, __ATOMIC_RELAXED))
            break;
        int all = __atomic_exchange_n(&s->flush_all, 0, __ATOMIC_ACQ_REL) != 0;
        uint64_t g1 = __atomic_load_n(&m->gen, __ATOMIC_ACQUIRE);
        uint64_t n = __atomic_load_n(&m->count, __ATOMIC_RELAXED);
        if (all || g1 != r || n > HV_SHOOTDOWN_MAX_PAGES) {
            all = 1;
        } else {
            for (uint64_t i = 0; i < n; i++)
                invlpg(__atomic_load_n(&m->pages[i], __ATOMIC_RELAXED));
            __atomic_thread_fence(__ATOMIC_ACQUIRE);
            if (__atomic_load_n(&m->gen, __ATOMIC_RELAXED) != r)
                all = 1; /* the list changed under us */
        }
        if (all)
            reload_cr3();
        __atomic_store_n(&s->ack, r, __ATOMIC_RELEASE);
    }
}

uint32_t rt_host_op(uint32_t op, uint64_t address, uint64_t address2, uint64_t *changed)
{
    struct hv_call_host_op c;
    memset(&c, 0, sizeof(c));
    c.hdr.nr = HV_CALL_HOST_OP;
    c.hdr.size = sizeof(c);
    c.op = op;
    c.address = address;
    c.address2 = address2;
    uint32_t status = hv_call(&c.hdr);
    if (changed)
        *changed = c.changed;
    return status;
}
