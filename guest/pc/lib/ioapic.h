/*
 * ioapic.h: an I/O APIC through its index/data window (IOREGSEL at +0x00,
 * IOWIN at +0x10) and its redirection entries.
 */
#ifndef PC_IOAPIC_H
#define PC_IOAPIC_H

#include "cpu.h"

#define IOAPIC_DEFAULT_BASE 0xfec00000u

#define IOAPIC_REG_ID 0x00
#define IOAPIC_REG_VERSION 0x01
#define IOAPIC_REG_REDIR 0x10 /* entry n: low dword at 0x10 + 2n, high at + 1 */

/* Redirection entry bits (low dword). */
#define IOAPIC_DM_FIXED (0u << 8)
#define IOAPIC_DEST_LOGICAL (1u << 11)
#define IOAPIC_ACTIVE_LOW (1u << 13)
#define IOAPIC_REMOTE_IRR (1u << 14)
#define IOAPIC_LEVEL (1u << 15)
#define IOAPIC_MASKED (1u << 16)

uint32_t ioapic_read(uintptr_t base, uint32_t reg);
void ioapic_write(uintptr_t base, uint32_t reg, uint32_t value);
/* Entries: low dword in bits 31:0, destination in bits 63:56. */
uint64_t ioapic_redir_read(uintptr_t base, unsigned pin);
void ioapic_redir_write(uintptr_t base, unsigned pin, uint64_t entry);
/* A physical-destination entry for an 8-bit APIC ID. */
uint64_t ioapic_entry(uint8_t vector, uint32_t flags, uint32_t apic_id);
/* Number of redirection entries (version register bits 23:16, plus one). */
unsigned ioapic_entries(uintptr_t base);

#endif
