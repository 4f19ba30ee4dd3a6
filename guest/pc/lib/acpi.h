/*
 * acpi.h: ACPI tables as firmware leaves them: the RSDP found by scanning
 * (the first KiB of the EBDA, whose segment is at 0x40E, then the BIOS area
 * 0xE0000-0xFFFFF, on 16-byte boundaries), the RSDT/XSDT, tables by
 * signature, the FADT fields the tests use, and the MADT (madt.c).
 */
#ifndef PC_ACPI_H
#define PC_ACPI_H

#include "cpu.h"

struct __attribute__((packed)) acpi_rsdp {
    char signature[8]; /* "RSD PTR " */
    uint8_t checksum;  /* of the first 20 bytes (ACPI 1.0 part) */
    char oem_id[6];
    uint8_t revision;  /* 0: ACPI 1.0 (RSDT only); 2: has length, XSDT */
    uint32_t rsdt;
    uint32_t length;
    uint64_t xsdt;
    uint8_t extended_checksum; /* of all `length` bytes */
    uint8_t reserved[3];
};

struct __attribute__((packed)) acpi_header {
    char signature[4];
    uint32_t length;
    uint8_t revision, checksum;
    char oem_id[6], oem_table_id[8];
    uint32_t oem_revision, creator_id, creator_revision;
};

/* Generic address structure (FADT X_ fields). */
struct __attribute__((packed)) acpi_gas {
    uint8_t space_id; /* 0: memory, 1: system I/O */
    uint8_t bit_width, bit_offset, access_size;
    uint64_t address;
};

/* FADT byte offsets (ACPI 6.x, table 5.9). */
#define FADT_FIRMWARE_CTRL 36
#define FADT_DSDT 40
#define FADT_PM1A_EVT_BLK 56
#define FADT_PM1A_CNT_BLK 64
#define FADT_PM_TMR_BLK 76
#define FADT_PM_TMR_LEN 91
#define FADT_FLAGS 112
#define FADT_X_FIRMWARE_CTRL 132
#define FADT_X_DSDT 140
#define FADT_X_PM1A_CNT_BLK 172
#define FADT_X_PM_TMR_BLK 208
#define FADT_FLAG_TMR_VAL_EXT (1u << 8)

uint8_t acpi_checksum(const void *p, size_t len); /* 0 when valid */
/* The RSDP (with a valid ACPI 1.0 checksum), or NULL; where it was found
 * in *where ("the EBDA" or "the BIOS area"). */
const struct acpi_rsdp *acpi_find_rsdp(const char **where);
/* The same scan, optionally accepting a bad checksum (to test it). */
const struct acpi_rsdp *acpi_scan_rsdp(const char **where, bool checksummed);
/* Tables listed by the XSDT (revision >= 2 and valid) or else the RSDT. */
unsigned acpi_table_count(void);
const struct acpi_header *acpi_table(unsigned i);
/* The first table with this signature, or NULL. */
const struct acpi_header *acpi_find_table(const char *signature);

/* A 32-bit or 64-bit little-endian field at a byte offset of a table;
 * 0 when the table is too short to have it. */
uint32_t acpi_u32(const struct acpi_header *t, unsigned offset);
uint64_t acpi_u64(const struct acpi_header *t, unsigned offset);
/* The PM timer's I/O port from the FADT (X_PM_TMR_BLK if it is there and
 * in I/O space, else PM_TMR_BLK) and its width; false without one. */
bool acpi_pm_timer_port(uint16_t *port, unsigned *bits);

#endif
