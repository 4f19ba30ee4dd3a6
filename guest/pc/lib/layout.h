/*
 * layout.h: constants shared by the assembly and the C code: the GDT
 * selectors, the boot stack, and where the AP trampoline goes.
 */
#ifndef PC_LAYOUT_H
#define PC_LAYOUT_H

/* GDT (entry.S): the same table serves the BSP and, through the
 * trampoline, every AP. */
#define GDT_CODE64 0x08
#define GDT_DATA 0x10
#define GDT_CODE32 0x18

#define BOOT_STACK_SIZE 0x4000
#define AP_STACK_SIZE 0x4000

/* The AP trampoline is copied to this page below 1 MiB; a SIPI with vector
 * V starts an AP in real mode at V << 12 (so 0x08 here). Memory below the
 * EBDA is free under QEMU's and our loaders once the multiboot information
 * has been copied out. */
#define TRAMPOLINE_BASE 0x8000
#define TRAMPOLINE_SIPI_VECTOR (TRAMPOLINE_BASE >> 12)

/* Offsets of the trampoline's parameter block (trampoline.S, smp.c). */
#define TRAMP_CR3 0
#define TRAMP_GDT_LIMIT 8 /* 16-bit limit, then a 32-bit base: lgdt's operand */
#define TRAMP_STACKS 16
#define TRAMP_STACK_SIZE 24
#define TRAMP_ENTRY 32
#define TRAMP_NEXT_SLOT 40
#define TRAMP_MAX_SLOTS 44
#define TRAMP_PARAMS_SIZE 48

#endif
