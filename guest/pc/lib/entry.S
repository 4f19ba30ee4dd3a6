/*
 * The multiboot v1 entry. The loader (QEMU's -kernel, or vmm run) enters
 * _start in 32-bit protected mode, paging off, EAX = 0x2BADB002, EBX = the
 * multiboot information; nothing else is promised (not even a GDT that
 * stays valid), so load our own GDT first, then build identity page tables
 * for the first 4 GiB with 2 MiB pages (LAPIC and IOAPIC MMIO live there),
 * enter long mode and call pc_start(magic, info) on our own stack.
 */
#include "layout.h"

#define MB_HEADER_MAGIC 0x1BADB002
#define MB_HEADER_FLAGS 0x3 /* bit 0: modules page-aligned; bit 1: memory info */

#define CR0_PE 0x1
#define CR0_PG 0x80000000
#define CR4_PAE 0x20
#define EFER_LME 0x100
#define PTE_P 0x1
#define PTE_W 0x2
#define PTE_PWT 0x8
#define PTE_PCD 0x10
#define PTE_PS 0x80

    .section .multiboot, "a"
    .balign 4
    .long MB_HEADER_MAGIC
    .long MB_HEADER_FLAGS
    .long -(MB_HEADER_MAGIC + MB_HEADER_FLAGS)

    .section .text.entry, "ax"
    .code32
    .globl _start
_start:
    cli
    cld
    mov %eax, %esi /* magic */
    /* EBX (the info pointer) is left alone until the call. */
    lgdt gdt_descriptor
    ljmp $GDT_CODE32, $1f
1:  mov $GDT_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    mov %eax, %fs
    mov %eax, %gs

    /* Zero .bss (the page tables and the stack are in it). */
    mov $__bss_start, %edi
    mov $__bss_end, %ecx
    sub %edi, %ecx
    shr $2, %ecx
    xor %eax, %eax
    rep stosl

    /* PML4[0] -> PDPT; PDPT[0..3] -> four page directories of 512 2 MiB
     * pages each. The fourth GiB (MMIO: PCI hole, IOAPIC, LAPIC) uncached. */
    movl $pdpt + (PTE_P | PTE_W), pml4
    mov $page_dirs + (PTE_P | PTE_W), %eax
    xor %ecx, %ecx
2:  mov %eax, pdpt(, %ecx, 8)
    add $0x1000, %eax
    inc %ecx
    cmp $4, %ecx
    jne 2b
    mov $(PTE_P | PTE_W | PTE_PS), %eax
    xor %ecx, %ecx
3:  mov %eax, page_dirs(, %ecx, 8)
    cmp $3 * 512, %ecx
    jb 4f
    orl $(PTE_PWT | PTE_PCD), page_dirs(, %ecx, 8)
4:  add $0x200000, %eax
    inc %ecx
    cmp $4 * 512, %ecx
    jne 3b

    mov %cr4, %eax
    or $CR4_PAE, %eax
    mov %eax, %cr4
    mov $pml4, %eax
    mov %eax, %cr3
    mov $0xc0000080, %ecx /* EFER */
    rdmsr
    or $EFER_LME, %eax
    wrmsr
    mov %cr0, %eax
    or $(CR0_PG | CR0_PE), %eax
    mov %eax, %cr0
    ljmp $GDT_CODE64, $start64

    .code64
start64:
    mov $GDT_DATA, %eax
    mov %eax, %ds
    mov %eax, %es
    mov %eax, %ss
    xor %eax, %eax
    mov %eax, %fs
    mov %eax, %gs
    mov $boot_stack + BOOT_STACK_SIZE, %rsp
    mov %esi, %edi /* pc_start(magic, info) */
    mov %ebx, %esi
    xor %ebp, %ebp
    call pc_start
5:  cli
    hlt
    jmp 5b

    .section .data
    .balign 8
    .globl gdt
gdt:
    .quad 0                  /* null */
    .quad 0x00af9a000000ffff /* GDT_CODE64: long mode, ring 0 */
    .quad 0x00cf92000000ffff /* GDT_DATA: flat, writable */
    .quad 0x00cf9a000000ffff /* GDT_CODE32: flat, for the 32-bit steps */
gdt_end:
    .balign 8
    .word 0
    .globl gdt_descriptor
gdt_descriptor:
    .word gdt_end - gdt - 1
    .quad gdt

    .section .bss
    .balign 4096
    .globl pml4
pml4:
    .skip 4096
pdpt:
    .skip 4096
page_dirs:
    .skip 4 * 4096
    .balign 16
boot_stack:
    .skip BOOT_STACK_SIZE

    .section .note.GNU-stack, "", @progbits
