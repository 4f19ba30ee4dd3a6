/*
 * smp.h: bringing up the APs with INIT/SIPI/SIPI and running work on them.
 *
 * The BSP copies the trampoline (trampoline.S) to TRAMPOLINE_BASE, then
 * sends each AP INIT, waits 10 ms, SIPI, waits 200 us, SIPI (or the same
 * three to all-excluding-self). An AP takes the next stack slot, becomes
 * CPU index slot + 1, loads the IDT, enables its APIC (x2APIC first if the
 * BSP asked for it, before it reads its ID), checks in and idles in
 * `sti; hlt`, running the work the BSP posts.
 */
#ifndef PC_SMP_H
#define PC_SMP_H

#include "percpu.h"

#define SMP_WAKE_VECTOR 0xf0 /* IPI that wakes an idle AP to look for work */

enum smp_mode { SMP_EACH, SMP_BROADCAST };

/* Copies the trampoline, allocates stacks for up to max_aps APs and resets
 * the counters. x2apic: APs switch to x2APIC mode before reading their ID. */
void smp_prepare(unsigned max_aps, bool x2apic);
/* INIT, 10 ms, SIPI, 200 us, SIPI to one APIC ID; SIPIs carry
 * `sipi_vector` (the AP starts at sipi_vector << 12). False when the ICR's
 * delivery status did not clear. */
bool smp_init_sipi(uint32_t apic_id, uint8_t sipi_vector);
/* The same to all-excluding-self. */
bool smp_init_sipi_broadcast(uint8_t sipi_vector);
/* APs that took a stack slot (reached long mode), and that checked in. */
unsigned smp_slots_taken(void);
unsigned smp_checked_in(void);
/* Waits until `count` APs checked in; false on timeout. */
bool smp_wait_checked_in(unsigned count, uint64_t timeout_us);

/* Everything above for every enabled processor in the MADT but the BSP;
 * with x2apic the BSP switches first. Returns the number of CPUs online
 * (the BSP included). Failures are reported. */
unsigned smp_boot(enum smp_mode mode, bool x2apic);
/* CPUs online: 1 + APs checked in. */
unsigned smp_cpus(void);

/* Runs fn(arg) on CPU `cpu` (interrupts off there) and waits for it; on
 * the BSP's own index it just calls fn. False (and a failure reported)
 * when it did not finish within 5 seconds. */
bool smp_run_on(unsigned cpu, void (*fn)(void *), void *arg);

#endif
