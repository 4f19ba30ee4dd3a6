/*
 * apic.h: the local APIC, in xAPIC mode (MMIO at the address in
 * IA32_APIC_BASE) or x2APIC mode (MSRs 0x800 + offset / 16), behind one
 * API: registers are named by their xAPIC MMIO offset either way. The mode
 * is per CPU (struct pc_cpu.x2apic).
 */
#ifndef PC_APIC_H
#define PC_APIC_H

#include "cpu.h"

#define APIC_DEFAULT_BASE 0xfee00000u
#define APIC_BASE_BSP (1u << 8)
#define APIC_BASE_X2APIC (1u << 10)
#define APIC_BASE_ENABLE (1u << 11)

/* Registers (xAPIC MMIO offsets). */
#define APIC_ID 0x020
#define APIC_VERSION 0x030
#define APIC_TPR 0x080
#define APIC_EOI 0x0b0
#define APIC_SVR 0x0f0
#define APIC_ISR 0x100 /* 8 registers, 0x10 apart */
#define APIC_TMR 0x180
#define APIC_IRR 0x200
#define APIC_ESR 0x280
#define APIC_ICR 0x300
#define APIC_ICR2 0x310 /* xAPIC only: destination in bits 31:24 */
#define APIC_LVT_TIMER 0x320
#define APIC_TIMER_INITIAL 0x380
#define APIC_TIMER_CURRENT 0x390
#define APIC_TIMER_DIVIDE 0x3e0
#define APIC_SELF_IPI 0x3f0 /* x2APIC only */

#define APIC_SVR_ENABLE (1u << 8)
#define APIC_LVT_MASKED (1u << 16)
#define APIC_TIMER_ONESHOT (0u << 17)
#define APIC_TIMER_PERIODIC (1u << 17)
#define APIC_TIMER_TSC_DEADLINE (2u << 17)
#define APIC_DIVIDE_1 0xbu

/* ICR low word. */
#define APIC_DM_FIXED (0u << 8)
#define APIC_DM_NMI (4u << 8)
#define APIC_DM_INIT (5u << 8)
#define APIC_DM_STARTUP (6u << 8)
#define APIC_ICR_BUSY (1u << 12) /* xAPIC delivery status: send pending */
#define APIC_ICR_ASSERT (1u << 14)
#define APIC_DEST_SELF (1u << 18)
#define APIC_DEST_ALL (2u << 18)
#define APIC_DEST_ALL_BUT_SELF (3u << 18)

bool apic_has_x2apic(void); /* CPUID.1:ECX[21] */
/* Globally enables the APIC in xAPIC mode (keeping x2APIC if it is on),
 * sets TPR 0 and software-enables it through the SVR (a software-disabled
 * APIC cannot send IPIs on KVM). */
void apic_enable(void);
/* Switches this CPU to x2APIC mode; false when the CPU has none. */
bool apic_enable_x2apic(void);
bool apic_is_x2apic(void);
uintptr_t apic_mmio_base(void);

uint32_t apic_read(uint32_t reg);
void apic_write(uint32_t reg, uint32_t value);
uint32_t apic_id(void); /* 8-bit xAPIC ID or 32-bit x2APIC ID */
void apic_eoi(void);
bool apic_isr_bit(uint8_t vector);
bool apic_irr_bit(uint8_t vector);

/* Sends an IPI: `low` is the ICR low word (vector, delivery mode,
 * shorthand), `dest` the APIC ID. In xAPIC mode waits for the delivery
 * status to clear; returns false when it did not within timeout_us. */
bool apic_icr_send(uint32_t dest, uint32_t low, uint64_t timeout_us);
/* A fixed interrupt to this CPU (ICR self shorthand). */
void apic_self_ipi(uint8_t vector);

/* Timer: LVT (vector | mode | mask), divide 1 unless said otherwise. */
void apic_timer_start(uint8_t vector, uint32_t mode, uint32_t initial_count);
void apic_timer_stop(void);
/* Timer ticks per second at divide 1, measured against the TSC. */
uint64_t apic_timer_hz(void);
/* The current count, read between two TSC reads and placed at their
 * midpoint; of `tries` reads the one with the narrowest bracket (a host
 * that preempts the vCPU can stretch one read to milliseconds). */
struct apic_timer_sample {
    uint32_t count;
    uint64_t tsc, width;
};
struct apic_timer_sample apic_timer_sample(unsigned tries);

#endif
