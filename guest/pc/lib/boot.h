/*
 * boot.h: what the multiboot loader handed over, copied out at start-up
 * (QEMU keeps the information at 0x9000 and the command line just past the
 * image, both of which we reuse later), and `key=value` words of the
 * command line. Under QEMU the command line is "KERNEL-PATH ARGS...", under
 * vmm run just "ARGS", so keys are looked up anywhere in it.
 */
#ifndef PC_BOOT_H
#define PC_BOOT_H

#include "cpu.h"

#define MB_BOOT_MAGIC 0x2BADB002u
#define MBI_FLAG_MEM (1u << 0)
#define MBI_FLAG_CMDLINE (1u << 2)
#define BOOT_CMDLINE_MAX 1024

struct boot_info {
    bool multiboot;            /* EAX held the multiboot magic */
    uint32_t mbi_addr;         /* where the loader put the information (EBX) */
    uint32_t mbi_flags;
    uint32_t mem_lower_kib;    /* valid with MBI_FLAG_MEM */
    uint32_t mem_upper_kib;    /* RAM from 1 MiB up, contiguous */
    char cmdline[BOOT_CMDLINE_MAX]; /* "" without MBI_FLAG_CMDLINE */
};
extern struct boot_info boot;

void boot_read_multiboot(uint32_t magic, uint32_t info_addr);

/* The value of `key=` as a pointer into the command line and its length;
 * NULL when the key is absent. */
const char *arg_value(const char *key, size_t *len);
/* Decimal or 0x-hex number. Absent: false. Malformed: a failure is
 * reported and false returned (a typo must not turn into a skip). */
bool arg_u64(const char *key, uint64_t *out);
/* Bytes, with an optional K, M or G suffix (powers of 1024). */
bool arg_size(const char *key, uint64_t *out);
/* Copies the value of `key` (truncated to size - 1 bytes); false when
 * absent. */
bool arg_copy(const char *key, char *buf, size_t size);
/* Whether the value of `key` equals `word`. */
bool arg_is(const char *key, const char *word);

/* Zeroed memory after the image (and after what the loader put there),
 * never freed. Out of memory ends the test. */
void *heap_alloc(size_t size, size_t align);

#endif
