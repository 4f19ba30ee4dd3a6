/*
 * madt.h: the MADT ("APIC" table) parsed once: local APIC address, the
 * processors (type 0 local APIC, type 9 x2APIC), I/O APICs (type 1) and
 * interrupt source overrides (type 2).
 */
#ifndef PC_MADT_H
#define PC_MADT_H

#include "percpu.h"

#define MADT_MAX_IOAPICS 8
#define MADT_MAX_OVERRIDES 16

struct madt_ioapic {
    uint8_t id;
    uint32_t address, gsi_base;
};

struct madt_override {
    uint8_t bus, source;
    uint32_t gsi;
    uint16_t flags; /* bits 1:0 polarity (3: active low), 3:2 trigger (3: level) */
};

struct madt_info {
    bool found;
    uint32_t lapic_address;
    uint32_t flags;
    unsigned cpus;          /* enabled processors (types 0 and 9) */
    unsigned cpus_disabled; /* listed without the enabled flag */
    unsigned lapic_entries, x2apic_entries;
    uint32_t apic_ids[PC_MAX_CPUS]; /* of the enabled ones, in table order */
    unsigned ioapics;
    struct madt_ioapic ioapic[MADT_MAX_IOAPICS];
    unsigned overrides;
    struct madt_override override[MADT_MAX_OVERRIDES];
    /* First structural problem found (an entry running past the table, a
     * length too short for its type), or NULL. */
    const char *malformed;
};

/* The parsed MADT (found == false without one). */
const struct madt_info *madt(void);
bool madt_has_apic_id(uint32_t apic_id);
/* The IOAPIC pin (GSI) an ISA IRQ arrives at, and the override's flags
 * (0 = bus default: edge, active high); identity without an override. */
uint32_t madt_isa_gsi(uint8_t irq, uint16_t *flags);
/* The IOAPIC holding a GSI, or NULL. */
const struct madt_ioapic *madt_ioapic_for_gsi(uint32_t gsi);

#endif
