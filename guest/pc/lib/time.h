/*
 * time.h: the TSC as the clock, calibrated at start-up against PIT channel
 * 2 (1.193182 MHz, gated through port 0x61), and delays built on it.
 */
#ifndef PC_TIME_H
#define PC_TIME_H

#include "cpu.h"

#define PIT_HZ 1193182u

/* Measures the TSC rate: the median of three clean ~35 ms spans of PIT
 * channel 2's counter (time.c says what clean means); false when the
 * counter does not move (the rate then stays a guess). */
bool time_init(void);
bool time_calibrated(void);
uint64_t tsc_hz(void);
uint64_t tsc_to_us(uint64_t ticks);
uint64_t us_to_tsc(uint64_t us);
/* rdtsc() + us microseconds. */
uint64_t tsc_deadline_us(uint64_t us);
void udelay(uint64_t us);
void mdelay(uint64_t ms);

#endif
