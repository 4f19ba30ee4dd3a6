/*
 * 64-bit entry, exception stubs and rt_try().
 *
 * Boot ABI (hv/abi.h): RDI = vCPU index, RSI = vCPU count, RDX = command
 * line gpa (0: none), RCX = RAM size, R8 = hv_shadow_info gpa (0: identity
 * mode), RSP = top of this vCPU's stack (16-byte aligned), interrupts off.
 */
#include "rt.h"

    .section .text.entry, "ax", @progbits
    .globl _start
    .type _start, @function
_start:
    cld
    xor %ebp, %ebp                  /* end of the frame-pointer chain */
    /* .bss needs no zeroing: the loader zero-fills every segment beyond its
     * file size (hv/abi.h), and zeroing it here while other vCPUs already
     * run cost seconds on some KVM hosts. */
    /* rt_start(vcpu, ncpus, cmdline, ram_size, shadow); RSP is 16-byte aligned
     * here, as the SysV ABI wants before a call. */
    call rt_start
2:  cli
    hlt
    jmp 2b
    .size _start, . - _start

/*
 * Exception stubs: make every vector look alike (an error code, 0 where the
 * CPU pushes none, then the vector number) and go to rt_exc_common.
 */
    .text
.macro EXC_NOERR vec
    .p2align 4
rt_exc_\vec:
    pushq $0
    pushq $\vec
    jmp rt_exc_common
.endm
.macro EXC_ERR vec
    .p2align 4
rt_exc_\vec:
    pushq $\vec
    jmp rt_exc_common
.endm

    EXC_NOERR 0     /* #DE */
    EXC_NOERR 1     /* #DB */
    EXC_NOERR 2     /* NMI */
    EXC_NOERR 3     /* #BP */
    EXC_NOERR 4     /* #OF */
    EXC_NOERR 5     /* #BR */
    EXC_NOERR 6     /* #UD */
    EXC_NOERR 7     /* #NM */
    EXC_ERR   8     /* #DF (error code 0) */
    EXC_NOERR 9
    EXC_ERR   10    /* #TS */
    EXC_ERR   11    /* #NP */
    EXC_ERR   12    /* #SS */
    EXC_ERR   13    /* #GP */
    EXC_ERR   14    /* #PF */
    EXC_NOERR 15
    EXC_NOERR 16    /* #MF */
    EXC_ERR   17    /* #AC */
    EXC_NOERR 18    /* #MC */
    EXC_NOERR 19    /* #XM */
    EXC_NOERR 20    /* #VE */
    EXC_ERR   21    /* #CP */
    EXC_NOERR 22
    EXC_NOERR 23
    EXC_NOERR 24
    EXC_NOERR 25
    EXC_NOERR 26
    EXC_NOERR 27
    EXC_NOERR 28    /* #HV */
    EXC_ERR   29    /* #VC */
    EXC_ERR   30    /* #SX */
    EXC_NOERR 31

/*
 * Builds struct rt_frame (internal.h): the GPRs below the vector, in
 * HV_RAX.. order from the lowest address, and calls rt_exception(frame).
 * In 64-bit mode the CPU aligns RSP to 16 before pushing its 5 words; with
 * error code, vector and 15 GPRs the frame is a multiple of 16, but align
 * again anyway (RBX is callee-saved and restored from the frame after).
 */
    .p2align 4
    .type rt_exc_common, @function
rt_exc_common:
    push %r15
    push %r14
    push %r13
    push %r12
    push %r11
    push %r10
    push %r9
    push %r8
    push %rbp
    push %rdi
    push %rsi
    push %rdx
    push %rcx
    push %rbx
    push %rax
    cld
    mov %rsp, %rdi
    mov %rsp, %rbx
    and $-16, %rsp
    call rt_exception
    mov %rbx, %rsp
    pop %rax
    pop %rbx
    pop %rcx
    pop %rdx
    pop %rsi
    pop %rdi
    pop %rbp
    pop %r8
    pop %r9
    pop %r10
    pop %r11
    pop %r12
    pop %r13
    pop %r14
    pop %r15
    add $16, %rsp                   /* vector, error code */
    iretq
    .size rt_exc_common, . - rt_exc_common

/*
 * int rt_try(struct rt_trap *t, uint32_t vectors): saves the callee-saved
 * registers, the caller's RSP and return address in *t, arms t on this
 * vCPU (t->prev = %gs:trap; %gs:trap = t) and returns 0. rt_exception()
 * later "returns 1" here by rewriting its frame from *t.
 */
    .globl rt_try
    .type rt_try, @function
    .p2align 4
rt_try:
    mov %rbx, RT_TRAP_RBX(%rdi)
    mov %rbp, RT_TRAP_RBP(%rdi)
    mov %r12, RT_TRAP_R12(%rdi)
    mov %r13, RT_TRAP_R13(%rdi)
    mov %r14, RT_TRAP_R14(%rdi)
    mov %r15, RT_TRAP_R15(%rdi)
    lea 8(%rsp), %rax               /* RSP after our ret */
    mov %rax, RT_TRAP_RSP(%rdi)
    mov (%rsp), %rax                /* return address */
    mov %rax, RT_TRAP_RIP(%rdi)
    mov %esi, RT_TRAP_VECTORS(%rdi)
    mov %gs:RT_CPU_TRAP, %rax
    mov %rax, RT_TRAP_PREV(%rdi)
    mov %rdi, %gs:RT_CPU_TRAP
    xor %eax, %eax
    ret
    .size rt_try, . - rt_try

    .section .rodata
    .p2align 3
    .globl rt_exc_stubs
rt_exc_stubs:
    .irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    .quad rt_exc_\v
    .endr
    .size rt_exc_stubs, . - rt_exc_stubs

    .section .note.GNU-stack, "", @progbits
