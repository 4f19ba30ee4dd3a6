/* A minimal 64-bit image: the bad-placement fixtures link it at addresses the
 * VMM must refuse (reserved region, beyond RAM, entry outside segments).
 *   f4        hlt
 *   eb fd     jmp . - 1 (back to hlt)
 */
    .text
    .globl _start
_start:
    hlt
    jmp _start
