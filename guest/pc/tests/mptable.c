/*
 * mptable: the Intel MP specification 1.4 tables. The floating pointer
 * "_MP_" is searched where the specification says (the EBDA's first KiB,
 * the last KiB of base memory, 0xF0000-0xFFFFF); then its checksum and
 * revision, the "PCMP" configuration table's checksum and entry walk, the
 * processors (== expect-cpus, exactly one BSP and it is us), an ISA bus,
 * an enabled I/O APIC at 0xFEC00000, and I/O interrupt entries that name
 * existing buses and I/O APICs.
 */
#include "pc.h"

const char pc_test_name[] = "mptable";

struct __attribute__((packed)) mp_floating {
    char signature[4]; /* "_MP_" */
    uint32_t config;   /* physical address of the configuration table */
    uint8_t length;    /* in 16-byte units: 1 */
    uint8_t spec_rev;  /* 1 (MP 1.1) or 4 (MP 1.4) */
    uint8_t checksum;
    uint8_t feature[5]; /* feature[0] != 0: a default configuration, no table */
};

struct __attribute__((packed)) mp_config {
    char signature[4]; /* "PCMP" */
    uint16_t base_length;
    uint8_t spec_rev, checksum;
    char oem_id[8], product_id[12];
    uint32_t oem_table;
    uint16_t oem_table_size, entry_count;
    uint32_t lapic_address;
    uint16_t ext_length;
    uint8_t ext_checksum, reserved;
};

enum { MP_PROCESSOR, MP_BUS, MP_IOAPIC, MP_IOINT, MP_LINT };
#define MP_CPU_ENABLED 1
#define MP_CPU_BSP 2

static const struct mp_floating *scan(uintptr_t start, uintptr_t len)
{
    for (uintptr_t a = start; a + 16 <= start + len; a += 16) {
        const struct mp_floating *f = phys_ptr(a);
        if (!memcmp(f->signature, "_MP_", 4))
            return f;
    }
    return NULL;
}

static const struct mp_floating *find(const char **where)
{
    uintptr_t ebda = (uintptr_t)*(volatile uint16_t *)phys_ptr(0x40e) << 4;
    uint32_t base_kib = *(volatile uint16_t *)phys_ptr(0x413);
    const struct mp_floating *f;
    if (ebda >= 0x400 && ebda < 0xa0000 && (f = scan(ebda, 1024))) {
        *where = "the EBDA's first KiB";
        return f;
    }
    if (base_kib < 1 || base_kib > 640)
        base_kib = 640;
    if ((f = scan((base_kib - 1) * 1024u, 1024))) {
        *where = "the last KiB of base memory";
        return f;
    }
    *where = "0xF0000-0xFFFFF";
    return scan(0xf0000, 0x10000);
}

struct walk {
    unsigned cpus, bsps, bsp_apic_id, isa_buses, ioapics_ok, ioints, bad_ioints;
    uint8_t bus_ids[256], ioapic_ids[256]; /* 1: present */
};

/* Entry sizes: 20 bytes for a processor, 8 for the others. */
static bool walk_entries(const struct mp_config *c, struct walk *w)
{
    const uint8_t *p = (const uint8_t *)(c + 1), *end = (const uint8_t *)c + c->base_length;
    /* Buses and I/O APICs precede the interrupt entries that name them,
     * but check after the whole walk to not depend on the order. */
    for (unsigned pass = 0; pass < 2; pass++) {
        p = (const uint8_t *)(c + 1);
        for (unsigned i = 0; i < c->entry_count; i++) {
            unsigned size = p[0] == MP_PROCESSOR ? 20 : 8;
            if (p + size > end || p[0] > MP_LINT) {
                report_fail("MP entry %u (type %u) at offset %u runs past the base table (%u bytes) or is unknown", i,
                            p < end ? p[0] : 0xff, (unsigned)(p - (const uint8_t *)c), c->base_length);
                return false;
            }
            if (pass == 0 && p[0] == MP_PROCESSOR && (p[3] & MP_CPU_ENABLED)) {
                w->cpus++;
                if (p[3] & MP_CPU_BSP)
                    w->bsps++, w->bsp_apic_id = p[1];
            } else if (pass == 0 && p[0] == MP_BUS) {
                w->bus_ids[p[1]] = 1;
                w->isa_buses += !memcmp(p + 2, "ISA   ", 6);
            } else if (pass == 0 && p[0] == MP_IOAPIC) {
                uint32_t addr;
                memcpy(&addr, p + 4, 4);
                w->ioapic_ids[p[1]] = 1;
                w->ioapics_ok += (p[3] & 1) && addr == IOAPIC_DEFAULT_BASE;
            } else if (pass == 1 && p[0] == MP_IOINT) {
                w->ioints++;
                /* source bus p[4]; destination I/O APIC p[6] (0xff: all) */
                w->bad_ioints += !w->bus_ids[p[4]] || (p[6] != 0xff && !w->ioapic_ids[p[6]]);
            }
            p += size;
        }
    }
    return true;
}

/* Every logical CPU has an entry, or (Intel's advice for MP tables on
 * multi-threaded packages, which SeaBIOS follows) only the first of each
 * package: CPUID.1:EBX[23:16] logical IDs per package when EDX.HTT is set.
 * QEMU's -smp N is one package of N cores unless sockets= says otherwise. */
static void check_cpu_count(unsigned expect, unsigned found)
{
    struct cpuid_regs r = cpuid(1, 0);
    unsigned per_package = (r.d & (1u << 28)) ? (r.b >> 16) & 0xff : 1;
    if (per_package <= 1 || found == expect) {
        report_eq("MP table enabled processor entries vs expect-cpus", expect, found);
        return;
    }
    unsigned packages = (expect + per_package - 1) / per_package;
    report(found == packages,
           "MP table enabled processor entries: expected %u (one per CPU) or %u (one per package of %u logical "
           "CPUs), found %u",
           expect, packages, per_package, found);
}

static void check_config(const struct mp_config *c, unsigned expect)
{
    if (!report(!memcmp(c->signature, "PCMP", 4), "MP configuration table signature 'PCMP'"))
        return;
    report(acpi_checksum(c, c->base_length) == 0, "MP configuration table checksum over %u bytes (sum 0x%02x)",
           c->base_length, acpi_checksum(c, c->base_length));
    report_eq_hex("MP configuration table local APIC address", APIC_DEFAULT_BASE, c->lapic_address);
    static struct walk w;
    if (!report(walk_entries(c, &w), "MP table: %u entries walked within the base table length", c->entry_count))
        return;
    if (expect && expect <= 255)
        check_cpu_count(expect, w.cpus);
    else if (expect)
        report_skip("MP table processors: expect-cpus=%u is above 255, which 8-bit MP APIC IDs cannot list", expect);
    else
        report_skip("MP table processors: %u (no expect-cpus= on the command line)", w.cpus);
    if (report_eq("MP table processor entries with the BSP flag", 1, w.bsps))
        report_eq("MP table BSP's APIC ID vs ours", apic_id(), w.bsp_apic_id);
    report(w.isa_buses >= 1, "MP table has an ISA bus entry (found %u)", w.isa_buses);
    report(w.ioapics_ok >= 1, "MP table has an enabled I/O APIC entry at 0x%x (found %u)", IOAPIC_DEFAULT_BASE,
           w.ioapics_ok);
    report(w.ioints > 0 && w.bad_ioints == 0, "MP table: %u I/O interrupt entries, %u naming a missing bus or I/O APIC",
           w.ioints, w.bad_ioints);
}

void test_main(void)
{
    const char *where;
    const struct mp_floating *f = find(&where);
    if (!report(f != NULL, "MP floating pointer '_MP_' found (last place searched: %s)", where))
        return;
    report_info("MP floating pointer at 0x%llx in %s, spec revision %u, configuration table at 0x%x",
                (unsigned long long)(uintptr_t)f, where, f->spec_rev, f->config);
    report(f->length >= 1 && acpi_checksum(f, 16u * f->length) == 0,
           "MP floating pointer checksum over %u bytes (sum 0x%02x)", 16u * f->length,
           acpi_checksum(f, 16u * f->length));
    report(f->spec_rev == 1 || f->spec_rev == 4, "MP spec revision is 1 or 4 (found %u)", f->spec_rev);
    if (!report(f->feature[0] == 0 && f->config != 0,
                "MP floating pointer names a configuration table (feature byte 1 = %u, address 0x%x)", f->feature[0],
                f->config))
        return;
    check_config((const struct mp_config *)(uintptr_t)f->config, expected_cpus());
}
