/*
 * percpu.h: one struct pc_cpu per CPU, found through the GS base (gs:0
 * holds the struct's own address), so interrupt handlers and code running
 * on an AP know which CPU they are on without asking the APIC.
 */
#ifndef PC_PERCPU_H
#define PC_PERCPU_H

#include "cpu.h"

#define PC_MAX_CPUS 1024

struct pc_cpu {
    struct pc_cpu *self; /* gs:0 */
    uint32_t index;      /* 0 = the BSP, then in the order APs checked in */
    uint32_t apic_id;
    bool x2apic;         /* this CPU's local APIC is in x2APIC mode */
    bool online;
    /* Exception fixup (idt.c): while fixup_rip is non-zero, an exception
     * resumes there and fault_vector says which one it was. */
    uint64_t fixup_rip;
    uint32_t fault_vector;
    /* Work the BSP posts (smp.c): fn(arg) runs once on this CPU. */
    void (*volatile work_fn)(void *);
    void *volatile work_arg;
    volatile uint32_t work_done; /* incremented after each work item */
};

#define PC_NO_FAULT 0xffffffffu

extern struct pc_cpu pc_cpus[PC_MAX_CPUS];

static inline struct pc_cpu *this_cpu(void)
{
    struct pc_cpu *c;
    __asm__ volatile("mov %%gs:0, %0" : "=r"(c));
    return c;
}

/* Points GS at pc_cpus[index] and fills in self/index. */
void percpu_init(uint32_t index);

#endif
