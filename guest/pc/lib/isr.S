/*
 * Interrupt and exception entry stubs, one per vector: each makes the stack
 * look the same (an error code, real or 0, then the vector number), saves
 * the general registers as a struct pc_regs (idt.h) and calls
 * pc_interrupt(regs).
 */

    .text
    .code64

/* Each stub takes at most 12 bytes (push imm8, push imm32, jmp rel32) in
 * a 16-byte slot, so idt.c finds stub V at isr_stubs + 16 * V.
 * The CPU pushes an error code for vectors 8, 10-14, 17, 21, 29 and 30. */
    .balign 16
    .globl isr_stubs
isr_stubs:
    .set vec, 0
    .rept 256
    .balign 16
    .if !(vec == 8 || (vec >= 10 && vec <= 14) || vec == 17 || vec == 21 || vec == 29 || vec == 30)
    push $0
    .endif
    push $vec
    jmp isr_common
    .set vec, vec + 1
    .endr

isr_common:
    push %rax
    push %rbx
    push %rcx
    push %rdx
    push %rsi
    push %rdi
    push %rbp
    push %r8
    push %r9
    push %r10
    push %r11
    push %r12
    push %r13
    push %r14
    push %r15
    cld
    mov %rsp, %rdi
    /* 15 registers + vector + error code + the CPU's 5-word frame: 22
     * words from a 16-byte aligned RSP, so RSP is aligned here. */
    call pc_interrupt
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %r11
    pop %r10
    pop %r9
    pop %r8
    pop %rbp
    pop %rdi
    pop %rsi
    pop %rdx
    pop %rcx
    pop %rbx
    pop %rax
    add $16, %rsp /* vector, error code */
    iretq


    .section .note.GNU-stack, "", @progbits
