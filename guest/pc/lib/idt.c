/* IDT set-up and the C side of every interrupt (isr.S calls pc_interrupt). */
#include "idt.h"

#include "apic.h"
#include "console.h"
#include "layout.h"
#include "percpu.h"
#include "report.h"

struct idt_gate {
    uint16_t offset_low, selector;
    uint8_t ist, type_attr; /* 0x8e: present, ring 0, 64-bit interrupt gate */
    uint16_t offset_mid;
    uint32_t offset_high, reserved;
};
_Static_assert(sizeof(struct idt_gate) == 16, "IDT gate layout");

extern const char isr_stubs[]; /* isr.S: 16 bytes per vector */

static struct idt_gate idt[256] __attribute__((aligned(16)));
static irq_handler_fn handlers[256];
static volatile uint32_t spurious_count;

static const char *const exception_names[32] = {
    "#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "#MF(9)", "#TS", "#NP", "#SS", "#GP", "#PF", "(15)",
    "#MF", "#AC", "#MC", "#XM", "#VE", "#CP", "(22)", "(23)", "(24)", "(25)", "(26)", "(27)", "#HV", "#VC", "#SX", "(31)",
};

void idt_load(void)
{
    struct __attribute__((packed)) {
        uint16_t limit;
        uint64_t base;
    } idtr = {sizeof idt - 1, (uint64_t)(uintptr_t)idt};
    __asm__ volatile("lidt %0" : : "m"(idtr));
}

void idt_init(void)
{
    for (unsigned v = 0; v < 256; v++) {
        uint64_t addr = (uint64_t)(uintptr_t)(isr_stubs + 16 * v);
        idt[v] = (struct idt_gate){
            .offset_low = (uint16_t)addr,
            .selector = GDT_CODE64,
            .type_attr = 0x8e,
            .offset_mid = (uint16_t)(addr >> 16),
            .offset_high = (uint32_t)(addr >> 32),
        };
    }
    idt_load();
}

void irq_set_handler(uint8_t vector, irq_handler_fn fn) { __atomic_store_n(&handlers[vector], fn, __ATOMIC_RELEASE); }

uint32_t spurious_interrupts(void) { return atomic_load(&spurious_count); }

static PC_NORETURN void unexpected_exception(const struct pc_regs *regs)
{
    struct pc_cpu *c = this_cpu();
    report_fail("unexpected exception %s (vector %llu) on CPU %u (APIC ID %u): error code 0x%llx, rip 0x%llx, "
                "cr2 0x%llx, rsp 0x%llx",
                exception_names[regs->vector], (unsigned long long)regs->vector, c->index, c->apic_id,
                (unsigned long long)regs->error_code, (unsigned long long)regs->rip, (unsigned long long)read_cr2(),
                (unsigned long long)regs->rsp);
    report_summary();
}

void pc_interrupt(struct pc_regs *regs); /* isr.S */
void pc_interrupt(struct pc_regs *regs)
{
    uint32_t vector = (uint32_t)regs->vector;
    if (vector < 32) {
        struct pc_cpu *c = this_cpu();
        if (!c->fixup_rip)
            unexpected_exception(regs);
        c->fault_vector = vector;
        regs->rip = c->fixup_rip;
        c->fixup_rip = 0;
        return;
    }
    irq_handler_fn fn = __atomic_load_n(&handlers[vector], __ATOMIC_ACQUIRE);
    if (fn) {
        fn(regs);
    } else if (vector == SPURIOUS_VECTOR) {
        atomic_inc(&spurious_count); /* a spurious interrupt sets no ISR bit: no EOI */
    } else {
        report_fail("unexpected interrupt: vector %u on CPU %u (APIC ID %u)", vector, this_cpu()->index,
                    this_cpu()->apic_id);
        apic_eoi();
    }
}

/* The fixup address is the instruction after RDMSR/WRMSR; the exception
 * path skips it by resuming there with fault_vector set. */
bool rdmsr_safe(uint32_t msr, uint64_t *value, uint32_t *vector)
{
    struct pc_cpu *c = this_cpu();
    uint32_t lo = 0, hi = 0;
    c->fault_vector = PC_NO_FAULT;
    __asm__ volatile("leaq 1f(%%rip), %%r11\n\t"
                     "movq %%r11, %[fixup]\n\t"
                     "rdmsr\n"
                     "1:\n\t"
                     "movq $0, %[fixup]"
                     : "+a"(lo), "+d"(hi), [fixup] "+m"(c->fixup_rip)
                     : "c"(msr)
                     : "r11", "memory");
    *value = (uint64_t)hi << 32 | lo;
    if (vector)
        *vector = c->fault_vector;
    return c->fault_vector == PC_NO_FAULT;
}

bool wrmsr_safe(uint32_t msr, uint64_t value, uint32_t *vector)
{
    struct pc_cpu *c = this_cpu();
    c->fault_vector = PC_NO_FAULT;
    __asm__ volatile("leaq 1f(%%rip), %%r11\n\t"
                     "movq %%r11, %[fixup]\n\t"
                     "wrmsr\n"
                     "1:\n\t"
                     "movq $0, %[fixup]"
                     : [fixup] "+m"(c->fixup_rip)
                     : "c"(msr), "a"((uint32_t)value), "d"((uint32_t)(value >> 32))
                     : "r11", "memory");
    if (vector)
        *vector = c->fault_vector;
    return c->fault_vector == PC_NO_FAULT;
}
