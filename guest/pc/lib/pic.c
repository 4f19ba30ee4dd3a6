/* The 8259 PICs: masked, so that ISA IRQs reach the CPU only through the
 * IOAPIC. */
#include "pic.h"

#include "cpu.h"

#define PIC_MASTER_DATA 0x21
#define PIC_SLAVE_DATA 0xa1

void pic_mask_all(void)
{
    outb(PIC_MASTER_DATA, 0xff);
    outb(PIC_SLAVE_DATA, 0xff);
}
