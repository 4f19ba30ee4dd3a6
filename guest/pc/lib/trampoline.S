/*
 * The AP trampoline: position-dependent code for TRAMPOLINE_BASE, kept in
 * .rodata as a blob that smp.c copies below 1 MiB and completes with the
 * parameter block (the BSP's CR3 and GDT, the stacks, the C entry).
 *
 * A SIPI starts the AP in real mode at CS = TRAMPOLINE_BASE >> 4, IP = 0.
 * It loads the BSP's GDT, enters protected mode, turns on PAE and
 * EFER.LME, loads the BSP's page tables and enables paging (long mode),
 * then takes a stack slot with an atomic increment and calls
 * entry(slot). A slot beyond max_slots parks the AP: it has no stack.
 */
#include "layout.h"

#define ABS(label) (TRAMPOLINE_BASE + (label - trampoline_start))
#define PARAM(off) (TRAMPOLINE_BASE + (trampoline_params - trampoline_start) + (off))

    .section .rodata
    .balign 16
    .globl trampoline_start, trampoline_end, trampoline_params
trampoline_start:
    .code16
    cli
    cld
    mov %cs, %ax
    mov %ax, %ds
    /* lgdtl: the 32-bit form, so the base is not truncated to 24 bits. */
    lgdtl (trampoline_params - trampoline_start + TRAMP_GDT_LIMIT)
    mov %cr0, %eax
    or $1, %eax /* PE */
    mov %eax, %cr0
    ljmpl $GDT_CODE32, $ABS(protected32)

    .code32
protected32:
    mov $GDT_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %cr4, %eax
    or $0x20, %eax /* PAE */
    mov %eax, %cr4
    mov PARAM(TRAMP_CR3), %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx /* EFER.LME */
    rdmsr
    or $0x100, %eax
    wrmsr
    mov %cr0, %eax
    or $0x80000000, %eax /* PG */
    mov %eax, %cr0
    ljmp $GDT_CODE64, $ABS(long64)

    .code64
long64:
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    mov $1, %eax
    lock xadd %eax, PARAM(TRAMP_NEXT_SLOT)
    cmp PARAM(TRAMP_MAX_SLOTS), %eax
    jae park
    mov %eax, %edi /* entry(slot) */
    lea 1(%rax), %rax
    imul PARAM(TRAMP_STACK_SIZE), %rax
    add PARAM(TRAMP_STACKS), %rax
    mov %rax, %rsp
    xor %ebp, %ebp
    mov PARAM(TRAMP_ENTRY), %rax
    call *%rax
park:
    cli
    hlt
    jmp park

    .balign 8
trampoline_params:
    .skip TRAMP_PARAMS_SIZE
trampoline_end:

    .section .note.GNU-stack, "", @progbits
