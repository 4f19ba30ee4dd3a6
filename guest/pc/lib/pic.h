/* pic.h: the two 8259 PICs, only to keep them quiet. */
#ifndef PC_PIC_H
#define PC_PIC_H

/* Masks every IRQ on both PICs (0xff to ports 0x21 and 0xa1). */
void pic_mask_all(void);

#endif
