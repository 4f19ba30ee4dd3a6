/* A minimal multiboot v1 kernel (ELF32): halts with interrupts off on the
 * boot CPU and never starts the others, so on the PC platform every vCPU is
 * halted or waits for INIT/SIPI and nothing can wake any of them.
 *   fa        cli
 *   f4        hlt
 *   eb fd     jmp . - 1 (back to hlt)
 */
    .text
    .align 4
    .long 0x1BADB002, 0, -0x1BADB002 /* magic, flags, checksum */
    .globl _start
_start:
    cli
1:  hlt
    jmp 1b
