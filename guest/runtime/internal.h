/* Runtime-internal declarations (not for guests). */
#ifndef GUEST_RT_INTERNAL_H
#define GUEST_RT_INTERNAL_H

#include "rt.h"

/* Per-vCPU state; GS base points at this vCPU's entry. */
struct rt_cpu {
    struct rt_cpu *self;  /* RT_CPU_SELF: read through %gs:0 */
    struct rt_trap *trap; /* RT_CPU_TRAP: innermost armed trap, or NULL */
    uint32_t index;
    uint32_t retry_refused; /* rt_fault_retry_refused() */
    struct hv_shootdown_slot *slot; /* shadow mode: this vCPU's shootdown slot */
    uint64_t page_faults;           /* HV_CALL_PAGE_FAULT calls made */
    _Alignas(16) uint8_t bounce[RT_BOUNCE_SIZE]; /* hypercall blocks above 4 GiB */
};

static inline struct rt_cpu *rt_this_cpu(void)
{
    struct rt_cpu *c;
    __asm__("mov %%gs:0, %0" : "=r"(c));
    return c;
}

/* The exception frame built by the stubs in entry.S (lowest address first). */
struct rt_frame {
    uint64_t gprs[HV_NGPRS]; /* in enum HV_RAX.. order */
    uint64_t vector;
    uint64_t error_code;
    /* Pushed by the CPU. */
    uint64_t rip, cs, rflags, rsp, ss;
};

/* entry.S */
extern const uint64_t rt_exc_stubs[32];
/* exception.c */
void rt_exception(struct rt_frame *f);
/* shadow.c; rt_shadow is NULL in identity mode */
extern const struct hv_shadow_info *rt_shadow;
void rt_shadow_init_cpu(struct rt_cpu *cpu); /* after idt_load() */
uint32_t rt_shadow_page_fault(struct rt_frame *f); /* HV_OK: retry the access */
void rt_shootdown_nmi(void);

#endif
