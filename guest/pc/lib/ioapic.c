/* I/O APIC register access (ioapic.h). */
#include "ioapic.h"

#define IOREGSEL 0x00
#define IOWIN 0x10

static struct spinlock window_lock; /* select + access must not interleave between CPUs */

uint32_t ioapic_read(uintptr_t base, uint32_t reg)
{
    uint64_t flags = irq_save();
    spin_lock(&window_lock);
    mmio_write32(base + IOREGSEL, reg);
    uint32_t v = mmio_read32(base + IOWIN);
    spin_unlock(&window_lock);
    irq_restore(flags);
    return v;
}

void ioapic_write(uintptr_t base, uint32_t reg, uint32_t value)
{
    uint64_t flags = irq_save();
    spin_lock(&window_lock);
    mmio_write32(base + IOREGSEL, reg);
    mmio_write32(base + IOWIN, value);
    spin_unlock(&window_lock);
    irq_restore(flags);
}

uint64_t ioapic_redir_read(uintptr_t base, unsigned pin)
{
    uint32_t lo = ioapic_read(base, IOAPIC_REG_REDIR + 2 * pin);
    uint32_t hi = ioapic_read(base, IOAPIC_REG_REDIR + 2 * pin + 1);
    return (uint64_t)hi << 32 | lo;
}

void ioapic_redir_write(uintptr_t base, unsigned pin, uint64_t entry)
{
    /* Mask first, destination next, low dword (with the real mask) last:
     * the entry never fires half-written. */
    ioapic_write(base, IOAPIC_REG_REDIR + 2 * pin, IOAPIC_MASKED);
    ioapic_write(base, IOAPIC_REG_REDIR + 2 * pin + 1, (uint32_t)(entry >> 32));
    ioapic_write(base, IOAPIC_REG_REDIR + 2 * pin, (uint32_t)entry);
}

uint64_t ioapic_entry(uint8_t vector, uint32_t flags, uint32_t apic_id)
{
    return (uint64_t)(apic_id & 0xff) << 56 | flags | IOAPIC_DM_FIXED | vector;
}

unsigned ioapic_entries(uintptr_t base) { return ((ioapic_read(base, IOAPIC_REG_VERSION) >> 16) & 0xff) + 1; }
