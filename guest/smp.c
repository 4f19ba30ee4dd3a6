/*
 * smp: every vCPU checks in (bitmap + counter) and records its RSP; vCPU 0
 * waits for all of them and checks that each index arrived exactly once and
 * that every stack lies in its own ABI slot:
 *   vCPU i: [top - (i+1)*HV_STACK_SIZE, top - i*HV_STACK_SIZE), top = min(RAM, 4 GiB).
 * Exit 0 when everything matches, 1 otherwise.
 */
#include "rt.h"

#ifndef SPIN_LIMIT
#define SPIN_LIMIT 2000000000ull /* pause iterations vCPU 0 waits at most */
#endif
#define MAX_LISTED 32            /* vCPUs named per problem in the report */

static uint64_t checked_in[RT_MAX_CPUS / 64];
static uint32_t arrivals;
static uint32_t duplicates;    /* indices that checked in more than once */
static uint32_t out_of_range;  /* indices >= ncpus */
static uint64_t stack_ptr[RT_MAX_CPUS];
static uint32_t seen_ncpus[RT_MAX_CPUS]; /* the boot information each vCPU got */
static uint64_t seen_ram[RT_MAX_CPUS];

static int has_checked_in(uint32_t i) { return __atomic_load_n(&checked_in[i / 64], __ATOMIC_ACQUIRE) >> (i % 64) & 1; }

static void check_in(const struct guest_boot *boot)
{
    uint32_t i = boot->vcpu;
    if (i >= boot->ncpus) {
        __atomic_fetch_add(&out_of_range, 1, __ATOMIC_RELAXED);
    } else {
        stack_ptr[i] = read_rsp();
        seen_ncpus[i] = boot->ncpus;
        seen_ram[i] = boot->ram_size;
        uint64_t bit = 1ull << (i % 64);
        if (__atomic_fetch_or(&checked_in[i / 64], bit, __ATOMIC_RELEASE) & bit)
            __atomic_fetch_add(&duplicates, 1, __ATOMIC_RELAXED);
    }
    __atomic_fetch_add(&arrivals, 1, __ATOMIC_RELEASE);
}

int guest_main(const struct guest_boot *boot)
{
    check_in(boot);
    if (boot->vcpu != 0)
        halt_forever();

    uint32_t n = boot->ncpus;
    uint64_t ram = boot->ram_size;

    uint64_t spins = 0;
    while (__atomic_load_n(&arrivals, __ATOMIC_ACQUIRE) < n && spins < SPIN_LIMIT) {
        cpu_relax();
        spins++;
    }

    int ok = 1;
    uint32_t got = __atomic_load_n(&arrivals, __ATOMIC_ACQUIRE);
    if (got != n) {
        ok = 0;
        printf("smp: %u check-ins from %u vCPUs after %lu spins\n", got, n, (unsigned long)spins);
    }
    uint32_t listed = 0, missing = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (has_checked_in(i))
            continue;
        missing++;
        if (listed++ < MAX_LISTED)
            printf("smp: vCPU %u did not check in\n", i);
    }
    if (missing) {
        ok = 0;
        printf("smp: %u vCPUs missing\n", missing);
    }
    if (duplicates) {
        ok = 0;
        printf("smp: %u check-ins repeated a vCPU index\n", duplicates);
    }
    if (out_of_range) {
        ok = 0;
        printf("smp: %u vCPUs had an index >= %u\n", out_of_range, n);
    }

    listed = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!has_checked_in(i))
            continue;
        if (seen_ncpus[i] != n || seen_ram[i] != ram) {
            ok = 0;
            if (listed++ < MAX_LISTED)
                printf("smp: vCPU %u booted with %u vCPUs and 0x%lx bytes of RAM; vCPU 0 with %u and 0x%lx\n", i,
                       seen_ncpus[i], (unsigned long)seen_ram[i], n, (unsigned long)ram);
        }
        uint64_t stacks_top = ram < (1ull << 32) ? ram : (1ull << 32); /* abi.h: below 4 GiB */
        uint64_t top = stacks_top - (uint64_t)i * HV_STACK_SIZE;
        uint64_t bottom = top - HV_STACK_SIZE;
        uint64_t sp = stack_ptr[i];
        if (sp < bottom || sp >= top) {
            ok = 0;
            if (listed++ < MAX_LISTED)
                printf("smp: vCPU %u runs on stack 0x%lx, outside its slot [0x%lx, 0x%lx)\n", i,
                       (unsigned long)sp, (unsigned long)bottom, (unsigned long)top);
        }
    }
    listed = 0;
    for (uint32_t i = 0; i < n; i++) {
        for (uint32_t j = i + 1; j < n; j++) {
            if (has_checked_in(i) && has_checked_in(j) && stack_ptr[i] == stack_ptr[j]) {
                ok = 0;
                if (listed++ < MAX_LISTED)
                    printf("smp: vCPUs %u and %u share the stack pointer 0x%lx\n", i, j,
                           (unsigned long)stack_ptr[i]);
            }
        }
    }

    if (!ok) {
        printf("smp: FAILED\n");
        return 1;
    }
    printf("smp: all %u vCPUs checked in\n", n);
    return 0;
}
