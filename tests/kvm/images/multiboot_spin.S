/* A minimal multiboot v1 kernel (ELF32): spins on the boot CPU and never
 * starts the others (for the timeout report of vCPUs that never left
 * wait-for-SIPI).
 *   eb fe     jmp .
 */
    .text
    .align 4
    .long 0x1BADB002, 0, -0x1BADB002 /* magic, flags, checksum */
    .globl _start
_start:
    jmp _start
