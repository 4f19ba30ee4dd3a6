/*
 * pm_timer.h: the ACPI power-management timer, a free-running 3.579545 MHz
 * counter at the I/O port the FADT names, 24 or 32 bits wide.
 */
#ifndef PC_PM_TIMER_H
#define PC_PM_TIMER_H

#include "cpu.h"

#define PM_TIMER_HZ 3579545u

/* Looks the timer up in the FADT; false when there is none. */
bool pm_timer_init(void);
bool pm_timer_present(void);
uint16_t pm_timer_port(void);
unsigned pm_timer_bits(void);
uint32_t pm_timer_read(void);
/* Ticks from `start` to `end`, modulo the counter's width. */
uint32_t pm_timer_delta(uint32_t start, uint32_t end);
uint64_t pm_timer_ticks_to_us(uint64_t ticks);

#endif
