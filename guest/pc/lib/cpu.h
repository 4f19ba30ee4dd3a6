/*
 * cpu.h: inline access to the CPU itself: MSRs, CPUID, control registers,
 * interrupt flag, MMIO and a spinlock, with port I/O and the TSC from
 * runtime/x86_io.h. No state.
 */
#ifndef PC_CPU_H
#define PC_CPU_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "x86_io.h" /* port I/O, rdtsc, cpu_relax */

#define PC_NORETURN __attribute__((noreturn))
#define PC_PRINTF(f, a) __attribute__((format(printf, f, a)))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

#define MSR_APIC_BASE 0x0000001bu
#define MSR_TSC_DEADLINE 0x000006e0u
#define MSR_EFER 0xc0000080u
#define MSR_GS_BASE 0xc0000101u


static inline uint64_t rdmsr(uint32_t msr)
{
    uint32_t lo, hi;
    __asm__ volatile("rdmsr" : "=a"(lo), "=d"(hi) : "c"(msr));
    return (uint64_t)hi << 32 | lo;
}
static inline void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}

struct cpuid_regs {
    uint32_t a, b, c, d;
};
static inline struct cpuid_regs cpuid(uint32_t leaf, uint32_t subleaf)
{
    struct cpuid_regs r;
    __asm__ volatile("cpuid" : "=a"(r.a), "=b"(r.b), "=c"(r.c), "=d"(r.d) : "a"(leaf), "c"(subleaf));
    return r;
}

/* CPUID.1:ECX feature bits the tests look at. */
#define CPUID_1_ECX_X2APIC (1u << 21)
#define CPUID_1_ECX_TSC_DEADLINE (1u << 24)
#define CPUID_1_ECX_HYPERVISOR (1u << 31)


static inline uint64_t read_cr2(void)
{
    uint64_t v;
    __asm__ volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}
static inline uint64_t read_cr3(void)
{
    uint64_t v;
    __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    return v;
}

static inline void irq_enable(void) { __asm__ volatile("sti" ::: "memory"); }
static inline void irq_disable(void) { __asm__ volatile("cli" ::: "memory"); }
/* sti takes effect after the next instruction, so an interrupt that is
 * already pending wakes the hlt instead of slipping in before it. */
static inline void safe_halt(void) { __asm__ volatile("sti; hlt" ::: "memory"); }
static inline uint64_t irq_save(void)
{
    uint64_t flags;
    __asm__ volatile("pushfq; popq %0; cli" : "=r"(flags) : : "memory");
    return flags;
}
static inline void irq_restore(uint64_t flags)
{
    if (flags & (1u << 9))
        irq_enable();
}
static inline void barrier(void) { __asm__ volatile("" ::: "memory"); }

/* A pointer to a fixed physical (= virtual) address. The empty asm hides
 * the constant from the compiler, which otherwise takes small addresses
 * such as the BDA's 0x40E for null-pointer arithmetic and warns. */
static inline void *phys_ptr(uintptr_t addr)
{
    __asm__("" : "+r"(addr));
    return (void *)addr;
}

static inline uint32_t mmio_read32(uintptr_t addr) { return *(volatile uint32_t *)addr; }
static inline void mmio_write32(uintptr_t addr, uint32_t v) { *(volatile uint32_t *)addr = v; }

/* A test-and-set lock. */
struct spinlock {
    volatile uint32_t locked;
};
static inline void spin_lock(struct spinlock *l)
{
    while (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE))
        while (l->locked)
            cpu_relax();
}
static inline void spin_unlock(struct spinlock *l) { __atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE); }

static inline uint32_t atomic_inc(volatile uint32_t *p) { return __atomic_fetch_add(p, 1, __ATOMIC_SEQ_CST); }
static inline uint32_t atomic_load(const volatile uint32_t *p) { return __atomic_load_n(p, __ATOMIC_ACQUIRE); }

#endif
