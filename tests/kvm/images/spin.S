/* Spins forever with interrupts off, for the --timeout test.
 *   eb fe     jmp .
 */
    .text
    .globl _start
_start:
    jmp _start
