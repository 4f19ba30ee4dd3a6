/*
 * idt.h: the interrupt descriptor table. Exceptions (vectors 0-31) are
 * failures: the handler prints the vector, error code, RIP, CR2 and APIC ID
 * and ends the test with exit status 1, unless the faulting code armed a
 * fixup (rdmsr_safe, wrmsr_safe). Vectors 32-255 go to the handler a test
 * registered for the vector; an interrupt nobody registered is counted as
 * a failure (and EOIed); SPURIOUS_VECTOR is counted, never EOIed.
 */
#ifndef PC_IDT_H
#define PC_IDT_H

#include "cpu.h"

#define SPURIOUS_VECTOR 0xffu

/* The stack as isr.S leaves it. */
struct pc_regs {
    uint64_t r15, r14, r13, r12, r11, r10, r9, r8, rbp, rdi, rsi, rdx, rcx, rbx, rax;
    uint64_t vector, error_code;
    uint64_t rip, cs, rflags, rsp, ss; /* pushed by the CPU */
};

typedef void (*irq_handler_fn)(struct pc_regs *regs);

/* Builds the IDT (BSP, once) and loads it. */
void idt_init(void);
/* Loads the IDT the BSP built (APs). */
void idt_load(void);
/* Handler for a vector >= 32 (NULL removes it); handlers run with
 * interrupts off and must EOI themselves. */
void irq_set_handler(uint8_t vector, irq_handler_fn fn);
uint32_t spurious_interrupts(void);

/* RDMSR/WRMSR that survive a #GP: return true when no exception happened,
 * else false with the vector in *vector (if not NULL). */
bool rdmsr_safe(uint32_t msr, uint64_t *value, uint32_t *vector);
bool wrmsr_safe(uint32_t msr, uint64_t value, uint32_t *vector);

#endif
