/*
 * acpi: the ACPI tables as a guest OS finds them. RSDP by scanning, its
 * checksums; RSDT and (revision >= 2) XSDT, listing the same tables; every
 * table's checksum; the FADT's PM blocks, DSDT and FACS; the MADT's local
 * APIC address, processors (== expect-cpus and == fw_cfg's count), I/O
 * APICs and interrupt source overrides.
 */
#include "pc.h"

const char pc_test_name[] = "acpi";

static const char *sig(const void *p, unsigned n)
{
    static char buf[4][9];
    static unsigned next;
    char *b = buf[next++ % 4];
    for (unsigned i = 0; i < n && i < 8; i++) {
        char c = ((const char *)p)[i];
        b[i] = c >= 0x20 && c < 0x7f ? c : '?';
        b[i + 1] = 0;
    }
    return b;
}

static bool table_ok(const struct acpi_header *t, const char *expect_sig, const char *what)
{
    if (!report(t && !memcmp(t->signature, expect_sig, 4), "%s: signature '%s', found '%s'", what, expect_sig,
                t ? sig(t->signature, 4) : "(null pointer)"))
        return false;
    return report(t->length >= sizeof *t && acpi_checksum(t, t->length) == 0,
                  "%s: checksum over %u bytes (sum 0x%02x, must be 0)", what, t->length, acpi_checksum(t, t->length));
}

static void check_root_tables(const struct acpi_rsdp *r)
{
    const struct acpi_header *rsdt = (const struct acpi_header *)(uintptr_t)r->rsdt;
    bool rsdt_ok = r->rsdt && table_ok(rsdt, "RSDT", "RSDT");
    if (r->revision < 2) {
        report_skip("XSDT: RSDP revision %u has none (QEMU's pc machine builds ACPI 1.0 RSDPs)", r->revision);
        return;
    }
    const struct acpi_header *xsdt = (const struct acpi_header *)(uintptr_t)r->xsdt;
    if (!report(r->xsdt && r->xsdt < (1ull << 32), "XSDT address 0x%llx is set and below 4 GiB",
                (unsigned long long)r->xsdt) ||
        !table_ok(xsdt, "XSDT", "XSDT") || !rsdt_ok)
        return;
    unsigned n4 = (rsdt->length - sizeof *rsdt) / 4, n8 = (xsdt->length - sizeof *xsdt) / 8;
    bool same = n4 == n8;
    for (unsigned i = 0; same && i < n4; i++) {
        uint32_t a4;
        uint64_t a8;
        memcpy(&a4, (const uint8_t *)(rsdt + 1) + 4 * i, 4);
        memcpy(&a8, (const uint8_t *)(xsdt + 1) + 8 * i, 8);
        same = a4 == a8;
    }
    report(same, "RSDT and XSDT list the same tables (%u and %u entries)", n4, n8);
}

static void check_fadt(void)
{
    const struct acpi_header *fadt = acpi_find_table("FACP");
    if (!report(fadt != NULL, "FADT (FACP) is listed"))
        return;
    uint32_t pm1a = acpi_u32(fadt, FADT_PM1A_CNT_BLK);
    uint64_t x_pm1a = fadt->length >= FADT_X_PM1A_CNT_BLK + 12 ? acpi_u64(fadt, FADT_X_PM1A_CNT_BLK + 4) : 0;
    report(pm1a || x_pm1a, "FADT PM1a control block: PM1a_CNT_BLK 0x%x, X_PM1a_CNT_BLK 0x%llx", pm1a,
           (unsigned long long)x_pm1a);
    uint16_t port;
    unsigned bits;
    bool tmr = acpi_pm_timer_port(&port, &bits);
    report(tmr, "FADT PM timer block: port 0x%x, %u bits", tmr ? port : 0, bits);

    uint64_t dsdt = acpi_u64(fadt, FADT_X_DSDT);
    if (!dsdt)
        dsdt = acpi_u32(fadt, FADT_DSDT);
    if (report(dsdt && dsdt < (1ull << 32), "FADT DSDT pointer 0x%llx is set and below 4 GiB",
               (unsigned long long)dsdt))
        table_ok((const struct acpi_header *)(uintptr_t)dsdt, "DSDT", "DSDT");

    uint64_t facs = acpi_u64(fadt, FADT_X_FIRMWARE_CTRL);
    if (!facs)
        facs = acpi_u32(fadt, FADT_FIRMWARE_CTRL);
    if (report(facs && facs < (1ull << 32), "FADT FACS pointer 0x%llx is set and below 4 GiB",
               (unsigned long long)facs)) {
        const char *f = (const char *)(uintptr_t)facs;
        report(!memcmp(f, "FACS", 4), "FACS signature 'FACS', found '%s'", sig(f, 4));
    }
}

static void check_overrides(const struct madt_info *m)
{
    bool ok = m->overrides <= MADT_MAX_OVERRIDES;
    for (unsigned i = 0; ok && i < m->overrides; i++) {
        const struct madt_override *o = &m->override[i];
        /* bus 0 = ISA; polarity and trigger value 2 are reserved */
        ok = o->bus == 0 && o->source < 16 && (o->flags & 3) != 2 && ((o->flags >> 2) & 3) != 2 &&
             madt_ioapic_for_gsi(o->gsi) != NULL;
        if (!ok)
            report_fail("MADT override %u: bus %u, IRQ %u -> GSI %u, flags 0x%x: not an ISA IRQ on an IOAPIC pin", i,
                        o->bus, o->source, o->gsi, o->flags);
    }
    if (ok)
        report(true, "MADT: %u interrupt source overrides, all ISA IRQs onto IOAPIC pins", m->overrides);
}

static void check_madt(unsigned expect)
{
    const struct acpi_header *t = acpi_find_table("APIC");
    if (!report(t != NULL, "MADT (APIC) is listed"))
        return;
    const struct madt_info *m = madt();
    report(m->malformed == NULL, "MADT entries are well-formed%s%s", m->malformed ? ": " : "",
           m->malformed ? m->malformed : "");
    report_eq_hex("MADT local APIC address", APIC_DEFAULT_BASE, m->lapic_address);
    report_eq_hex("MADT local APIC address vs IA32_APIC_BASE", rdmsr(MSR_APIC_BASE) & 0xfffff000u, m->lapic_address);
    report_info("MADT: %u local APIC and %u x2APIC entries, %u enabled, %u I/O APICs", m->lapic_entries,
                m->x2apic_entries, m->cpus, m->ioapics);
    if (expect)
        report_eq("MADT enabled processors (local APIC + x2APIC entries) vs expect-cpus", expect, m->cpus);
    else
        report_skip("MADT processor count %u (no expect-cpus= on the command line)", m->cpus);
    report(madt_has_apic_id(apic_id()), "MADT lists the BSP's APIC ID %u", apic_id());
    if (report(m->ioapics >= 1, "MADT lists at least one I/O APIC (found %u)", m->ioapics))
        report_info("I/O APIC ID %u at 0x%x, GSI base %u", m->ioapic[0].id, m->ioapic[0].address,
                    m->ioapic[0].gsi_base);
    check_overrides(m);
    if (fw_cfg_present())
        report_eq("MADT enabled processors vs fw_cfg CPU count (key 5)", fw_cfg_read_int(FW_CFG_NB_CPUS, 2), m->cpus);
    else
        report_skip("MADT processors vs fw_cfg: no fw_cfg device");
}

void test_main(void)
{
    const char *where = NULL;
    const struct acpi_rsdp *r = acpi_scan_rsdp(&where, false);
    if (!report(r != NULL, "RSDP found by scanning the EBDA's first KiB and 0xE0000-0xFFFFF"))
        return;
    report_info("RSDP at 0x%llx in %s, revision %u, OEM '%s'", (unsigned long long)(uintptr_t)r, where, r->revision,
                sig(r->oem_id, 6));
    report(acpi_checksum(r, 20) == 0, "RSDP ACPI 1.0 checksum over 20 bytes (sum 0x%02x)", acpi_checksum(r, 20));
    if (r->revision >= 2)
        report(r->length >= 36 && acpi_checksum(r, r->length) == 0,
               "RSDP extended checksum over %u bytes (sum 0x%02x)", r->length, acpi_checksum(r, r->length));
    else
        report_skip("RSDP extended checksum: revision %u has no extended part", r->revision);
    if (acpi_find_rsdp(NULL) != r)
        return; /* the tables are found through a valid RSDP only */
    check_root_tables(r);

    unsigned n = acpi_table_count(), bad = 0;
    for (unsigned i = 0; i < n; i++) {
        const struct acpi_header *t = acpi_table(i);
        if (!t || t->length < sizeof *t || acpi_checksum(t, t->length)) {
            report_fail("table %u ('%s' at 0x%llx): bad pointer, length or checksum", i, t ? sig(t, 4) : "?",
                        (unsigned long long)(uintptr_t)t);
            bad++;
        } else {
            report_info("table '%s' at 0x%llx, %u bytes, revision %u", sig(t, 4), (unsigned long long)(uintptr_t)t,
                        t->length, t->revision);
        }
    }
    if (!bad)
        report(n > 0, "all %u tables the root table lists have valid checksums", n);
    check_fadt();
    check_madt(expected_cpus());
}
