/* RSDP scan, RSDT/XSDT walk, table lookup, FADT fields (acpi.h). */
#include "acpi.h"

#include "rt_string.h"

#define EBDA_SEGMENT_PTR 0x40e
#define BIOS_AREA_START 0xe0000u
#define BIOS_AREA_END 0x100000u

uint8_t acpi_checksum(const void *p, size_t len)
{
    const uint8_t *b = p;
    uint8_t sum = 0;
    while (len--)
        sum = (uint8_t)(sum + *b++);
    return sum;
}

static const struct acpi_rsdp *scan(uintptr_t start, uintptr_t end, bool checksummed)
{
    for (uintptr_t a = start; a + 20 <= end; a += 16) {
        const struct acpi_rsdp *r = phys_ptr(a);
        if (!memcmp(r->signature, "RSD PTR ", 8) && (!checksummed || acpi_checksum(r, 20) == 0))
            return r;
    }
    return NULL;
}

const struct acpi_rsdp *acpi_scan_rsdp(const char **where, bool checksummed)
{
    uintptr_t ebda = (uintptr_t)*(volatile uint16_t *)phys_ptr(EBDA_SEGMENT_PTR) << 4;
    const struct acpi_rsdp *r = NULL;
    if (ebda >= 0x400 && ebda < BIOS_AREA_START && (r = scan(ebda, ebda + 1024, checksummed))) {
        if (where)
            *where = "the EBDA";
        return r;
    }
    if ((r = scan(BIOS_AREA_START, BIOS_AREA_END, checksummed)) && where)
        *where = "the BIOS area";
    return r;
}

const struct acpi_rsdp *acpi_find_rsdp(const char **where) { return acpi_scan_rsdp(where, true); }

/* The root table the walk uses, and the width of its entries. */
static const struct acpi_header *root(unsigned *entry_size)
{
    const struct acpi_rsdp *r = acpi_find_rsdp(NULL);
    if (!r)
        return NULL;
    if (r->revision >= 2 && r->xsdt && r->xsdt < (1ull << 32)) {
        const struct acpi_header *x = (const struct acpi_header *)(uintptr_t)r->xsdt;
        if (!memcmp(x->signature, "XSDT", 4)) {
            *entry_size = 8;
            return x;
        }
    }
    const struct acpi_header *t = (const struct acpi_header *)(uintptr_t)r->rsdt;
    if (!r->rsdt || memcmp(t->signature, "RSDT", 4))
        return NULL;
    *entry_size = 4;
    return t;
}

unsigned acpi_table_count(void)
{
    unsigned size;
    const struct acpi_header *t = root(&size);
    return t && t->length >= sizeof *t ? (t->length - sizeof *t) / size : 0;
}

const struct acpi_header *acpi_table(unsigned i)
{
    unsigned size;
    const struct acpi_header *t = root(&size);
    if (!t || i >= acpi_table_count())
        return NULL;
    const uint8_t *entries = (const uint8_t *)(t + 1);
    uint64_t addr = 0;
    memcpy(&addr, entries + (size_t)i * size, size);
    return addr && addr < (1ull << 32) ? (const struct acpi_header *)(uintptr_t)addr : NULL;
}

const struct acpi_header *acpi_find_table(const char *signature)
{
    unsigned n = acpi_table_count();
    for (unsigned i = 0; i < n; i++) {
        const struct acpi_header *t = acpi_table(i);
        if (t && !memcmp(t->signature, signature, 4))
            return t;
    }
    return NULL;
}

uint32_t acpi_u32(const struct acpi_header *t, unsigned offset)
{
    uint32_t v = 0;
    if (offset + 4 <= t->length)
        memcpy(&v, (const uint8_t *)t + offset, 4);
    return v;
}

uint64_t acpi_u64(const struct acpi_header *t, unsigned offset)
{
    uint64_t v = 0;
    if (offset + 8 <= t->length)
        memcpy(&v, (const uint8_t *)t + offset, 8);
    return v;
}

bool acpi_pm_timer_port(uint16_t *port, unsigned *bits)
{
    const struct acpi_header *fadt = acpi_find_table("FACP");
    if (!fadt)
        return false;
    *bits = acpi_u32(fadt, FADT_FLAGS) & FADT_FLAG_TMR_VAL_EXT ? 32 : 24;
    struct acpi_gas x = {0, 0, 0, 0, 0};
    if (fadt->length >= FADT_X_PM_TMR_BLK + sizeof x)
        memcpy(&x, (const uint8_t *)fadt + FADT_X_PM_TMR_BLK, sizeof x);
    if (x.address && x.space_id == 1 && x.address <= 0xffff) {
        *port = (uint16_t)x.address;
        return true;
    }
    uint32_t blk = acpi_u32(fadt, FADT_PM_TMR_BLK);
    *port = (uint16_t)blk;
    return blk && blk <= 0xffff;
}
