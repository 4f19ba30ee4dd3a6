/* MADT parsing (madt.h). */
#include "madt.h"

#include "acpi.h"
#include "ioapic.h"
#include "rt_string.h"

#define MADT_LAPIC_ENABLED 1u
#define MADT_HEADER_SIZE 44 /* ACPI header, local APIC address, flags */

static struct madt_info info;
static bool parsed;

static void add_cpu(uint32_t apic_id, uint32_t flags)
{
    if (!(flags & MADT_LAPIC_ENABLED)) {
        info.cpus_disabled++;
        return;
    }
    if (info.cpus < PC_MAX_CPUS)
        info.apic_ids[info.cpus] = apic_id;
    info.cpus++;
}

static void parse(const struct acpi_header *t)
{
    const uint8_t *p = (const uint8_t *)t, *end = p + t->length;
    info.found = true;
    info.lapic_address = acpi_u32(t, 36);
    info.flags = acpi_u32(t, 40);
    for (p += MADT_HEADER_SIZE; p < end; p += p[1]) {
        uint8_t type = p[0], len = end - p >= 2 ? p[1] : 0;
        static const uint8_t min_len[10] = {8, 12, 10, 8, 6, 12, 16, 17, 16, 16};
        if (len < 2 || p + len > end || (type < 10 && len < min_len[type])) {
            info.malformed = len < 2 || p + len > end ? "an entry runs past the end of the table"
                                                       : "an entry is shorter than its type requires";
            return;
        }
        uint32_t u32a, u32b;
        switch (type) {
        case 0: /* processor local APIC: UID, APIC ID, flags */
            memcpy(&u32a, p + 4, 4);
            info.lapic_entries++;
            add_cpu(p[3], u32a);
            break;
        case 9: /* processor local x2APIC: reserved, x2APIC ID, flags, UID */
            memcpy(&u32a, p + 4, 4);
            memcpy(&u32b, p + 8, 4);
            info.x2apic_entries++;
            add_cpu(u32a, u32b);
            break;
        case 1: /* I/O APIC: ID, reserved, address, GSI base */
            if (info.ioapics < MADT_MAX_IOAPICS) {
                struct madt_ioapic *io = &info.ioapic[info.ioapics];
                io->id = p[2];
                memcpy(&io->address, p + 4, 4);
                memcpy(&io->gsi_base, p + 8, 4);
            }
            info.ioapics++;
            break;
        case 2: /* interrupt source override: bus, source, GSI, flags */
            if (info.overrides < MADT_MAX_OVERRIDES) {
                struct madt_override *o = &info.override[info.overrides];
                o->bus = p[2];
                o->source = p[3];
                memcpy(&o->gsi, p + 4, 4);
                memcpy(&o->flags, p + 8, 2);
            }
            info.overrides++;
            break;
        default:
            break;
        }
    }
}

const struct madt_info *madt(void)
{
    if (!parsed) {
        parsed = true;
        const struct acpi_header *t = acpi_find_table("APIC");
        if (t)
            parse(t);
    }
    return &info;
}

bool madt_has_apic_id(uint32_t apic_id)
{
    const struct madt_info *m = madt();
    for (unsigned i = 0; i < m->cpus && i < PC_MAX_CPUS; i++)
        if (m->apic_ids[i] == apic_id)
            return true;
    return false;
}

uint32_t madt_isa_gsi(uint8_t irq, uint16_t *flags)
{
    const struct madt_info *m = madt();
    for (unsigned i = 0; i < m->overrides && i < MADT_MAX_OVERRIDES; i++) {
        if (m->override[i].bus == 0 && m->override[i].source == irq) {
            if (flags)
                *flags = m->override[i].flags;
            return m->override[i].gsi;
        }
    }
    if (flags)
        *flags = 0;
    return irq;
}

const struct madt_ioapic *madt_ioapic_for_gsi(uint32_t gsi)
{
    const struct madt_info *m = madt();
    for (unsigned i = 0; i < m->ioapics && i < MADT_MAX_IOAPICS; i++)
        if (m->ioapic[i].gsi_base <= gsi && gsi < m->ioapic[i].gsi_base + ioapic_entries(m->ioapic[i].address))
            return &m->ioapic[i];
    return NULL;
}
