/* Halts with interrupts on; this VM has no interrupt source, so the VMM
 * must end it rather than wait forever.
 *   fb        sti
 *   f4        hlt
 *   eb fc     jmp _start
 */
    .text
    .globl _start
_start:
    sti
    hlt
    jmp _start
