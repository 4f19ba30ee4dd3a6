/*
 * apic_tests.h: the parts of the apic test image. Each runs in the APIC
 * mode this CPU is in now; `mode` ("xAPIC" or "x2APIC") prefixes the check
 * names, so one suite reports twice.
 */
#ifndef PC_APIC_TESTS_H
#define PC_APIC_TESTS_H

#include "pc.h"

/* Vectors, one priority class (upper nibble) each. */
#define TIMER_VECTOR 0x40
#define SELF_IPI_VECTOR 0x50
#define IPI_VECTOR 0x60
#define EOI_VECTOR 0x70

/* apic_timer.c */
void test_timer_oneshot(const char *mode, uint64_t timer_hz);
void test_timer_periodic(const char *mode, uint64_t timer_hz);
void test_timer_tsc_deadline(const char *mode);

/* apic_ipi.c */
void test_self_ipi(const char *mode);
void test_ipi_other_cpu(const char *mode);
void test_eoi(const char *mode);

/* Spins with interrupts on until *counter >= target or timeout_us passed;
 * returns the counter. */
uint32_t wait_for_count(volatile uint32_t *counter, uint32_t target, uint64_t timeout_us);
/* How long an expected interrupt may take, and how long to go on watching
 * for a second one that must not come: generous, because a starved host
 * (QEMU TCG at load 25 on 2 cores) delays deliveries by hundreds of ms;
 * the waits end as soon as the interrupt arrives. */
#define ARRIVAL_US 1000000u
#define AFTERWARDS_US 20000u
/* Waits for one interrupt, then watches for a duplicate: the final count. */
uint32_t wait_for_one(volatile uint32_t *counter);

#endif
