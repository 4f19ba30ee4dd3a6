/* What hostile.c and hostile_tables.c share: the modes that attack the
 * VMM's page tables, and the way every mode ends. */
#ifndef HV_GUEST_HOSTILE_H
#define HV_GUEST_HOSTILE_H

#include "rt.h"

/* With no IDT, the next exception is a triple fault. */
RT_NORETURN void triple_fault(void);
/* Overwrites every table the VMM's CR3 leads to ("ones", "zeros", "self" or
 * "cross"), then returns to the VMM's CR3 with no IDT. */
RT_NORETURN void tables_mode(const char *how);
/* Reads every VMM table and scribbles on the region's data frames from
 * tables of our own, then returns to the VMM's tables. */
RT_NORETURN void cr3_own_mode(const struct guest_boot *boot);

#endif
