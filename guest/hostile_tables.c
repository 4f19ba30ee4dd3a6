/*
 * hostile's attacks on the VMM's page tables (modes tables-* and cr3-own,
 * see hostile.c), and the triple fault every mode ends with.
 */
#include "hostile.h"
#include "internal.h"
#include "rt.h"

#define MAX_TABLES 256

/* The VMM's tables found from its CR3: guest-physical address, level (4:
 * the root, 1: a leaf table) and the first guest-virtual address it maps. */
static struct found_table {
    uint64_t gpa, va;
    int level;
} tables[MAX_TABLES];
static uint32_t ntables;

/* With no IDT, the next exception is a triple fault. */
static void load_empty_idt(void)
{
    struct __attribute__((packed)) {
        uint16_t limit;
        uint64_t base;
    } empty = {0, 0};
    __asm__ volatile("lidt %0" : : "m"(empty) : "memory");
}

RT_NORETURN void triple_fault(void)
{
    load_empty_idt();
    __asm__ volatile("ud2" ::: "memory");
    for (;;)
        cpu_relax();
}

/* Loads our own tables (rt_identity_cr3); returns the VMM's CR3. */
static uint64_t load_own_tables(void)
{
    const uint64_t vmm = read_cr3();
    write_cr3(rt_identity_cr3());
    return vmm;
}

/* The tables below `root` (breadth first), read through our own identity
 * map. Only tables below 4 GiB are followed. */
static void find_tables(uint64_t root)
{
    ntables = 0;
    tables[ntables++] = (struct found_table){root & PTE_ADDR, 0, 4};
    for (uint32_t t = 0; t < ntables && ntables < MAX_TABLES; t++) {
        if (tables[t].level == 1)
            continue;
        const volatile uint64_t *e = (const volatile uint64_t *)(uintptr_t)tables[t].gpa;
        const unsigned shift = 12 + 9 * (unsigned)(tables[t].level - 1);
        for (uint64_t i = 0; i < 512 && ntables < MAX_TABLES; i++) {
            uint64_t v = e[i];
            if (!(v & PTE_P) || (tables[t].level < 4 && (v & PTE_PS)) || (v & PTE_ADDR) >= (4ull << 30))
                continue;
            tables[ntables++] = (struct found_table){v & PTE_ADDR, tables[t].va + (i << shift), tables[t].level - 1};
        }
    }
}

RT_NORETURN void tables_mode(const char *how)
{
    uint64_t vmm = load_own_tables();
    find_tables(vmm);
    printf("hostile: %u tables below CR3 %#lx; overwriting them (%s)\n", ntables, (unsigned long)vmm, how);
    for (uint32_t t = 0; t < ntables; t++) {
        volatile uint64_t *e = (volatile uint64_t *)(uintptr_t)tables[t].gpa;
        for (int i = 0; i < 512; i++) {
            uint64_t v = 0;
            if (!strcmp(how, "ones"))
                v = ~0ull;
            else if (!strcmp(how, "self"))
                v = tables[t].gpa | PTE_P | PTE_RW | PTE_A | PTE_NX;
            else if (!strcmp(how, "cross"))
                v = tables[(t + 1) % ntables].gpa | PTE_P | PTE_RW | PTE_A | PTE_NX;
            e[i] = v;
        }
    }
    printf("hostile: overwrote %u tables; back to the VMM's CR3\n", ntables);
    /* Every page now maps a table frame (self, cross: not executable), or
     * nothing: the next instruction fetch faults, and with no IDT that is a
     * triple fault. Executable table bytes could loop forever instead (a
     * clang-built image did, on kvm_pvm). */
    load_empty_idt();
    write_cr3(vmm);
    triple_fault();
}

RT_NORETURN void cr3_own_mode(const struct guest_boot *boot)
{
    const struct hv_shadow_info *sh = boot->shadow;
    const uint64_t region = sh ? sh->region_base : ~0ull;
    if (sh)
        for (uint64_t p = 0; p < 64 && p * 4096 < sh->region_size; p++)
            *(volatile uint64_t *)(uintptr_t)(region + p * 4096) = p + 1;
    uint64_t vmm = load_own_tables();
    find_tables(vmm);
    uint64_t sum = 0, data = 0;
    for (uint32_t t = 0; t < ntables; t++) {
        const volatile uint64_t *e = (const volatile uint64_t *)(uintptr_t)tables[t].gpa;
        for (int i = 0; i < 512; i++) {
            uint64_t v = e[i];
            sum += v;
            /* A leaf of the region: its frame is a data frame of the VMM's
             * host address space. Scribble on it. */
            if (tables[t].level == 1 && tables[t].va >= region && (v & PTE_P) && (v & PTE_ADDR) < boot->ram_size) {
                volatile uint64_t *d = (volatile uint64_t *)(uintptr_t)(v & PTE_ADDR);
                for (int w = 0; w < 512; w++)
                    d[w] = 0x5a5a5a5a5a5a5a5aull;
                data++;
            }
        }
    }
    printf("hostile: read %u tables (sum %#lx), scribbled on %lu data frames; back to the VMM's CR3\n", ntables,
           (unsigned long)sum, (unsigned long)data);
    write_cr3(vmm);
    if (sh)
        for (uint64_t p = 0; p < 64 && p * 4096 < sh->region_size; p++)
            (void)*(volatile uint64_t *)(uintptr_t)(region + p * 4096);
    triple_fault();
}
