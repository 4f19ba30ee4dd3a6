/*
 * The 64-bit guest runtime: entry, per-vCPU state, IDT and exception
 * reporting, hypercalls, serial output and a few libc-style helpers.
 *
 * Every 64-bit guest links the runtime and defines
 *     int guest_main(const struct guest_boot *boot);
 * which runs on every vCPU; its return value is passed to exit(), which stops
 * the whole VM, so vCPUs other than the one that decides the outcome must not
 * return (call halt_forever()).
 *
 * The part below __ASSEMBLER__ is shared with the assembly files.
 */
#ifndef GUEST_RT_H
#define GUEST_RT_H

/* Highest number of vCPUs the runtime keeps per-vCPU state for. */
#define RT_MAX_CPUS 1024

/* struct rt_cpu field offsets (checked against the C layout in start.c). */
#define RT_CPU_SELF 0
#define RT_CPU_TRAP 8

/* struct rt_trap field offsets (checked in exception.c). */
#define RT_TRAP_RBX 0
#define RT_TRAP_RBP 8
#define RT_TRAP_R12 16
#define RT_TRAP_R13 24
#define RT_TRAP_R14 32
#define RT_TRAP_R15 40
#define RT_TRAP_RSP 48
#define RT_TRAP_RIP 56
#define RT_TRAP_PREV 64
#define RT_TRAP_VECTORS 72

#ifndef __ASSEMBLER__

#include <hv/abi.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#define RT_NORETURN __attribute__((noreturn))
#define RT_PRINTF(f, a) __attribute__((format(printf, f, a)))

/* ---- boot ---------------------------------------------------------------- */

struct guest_boot {
    uint32_t vcpu;       /* this vCPU's index, 0 .. ncpus-1 */
    uint32_t ncpus;      /* number of vCPUs */
    const char *cmdline; /* NUL-terminated; "" when the VMM passed none */
    uint64_t ram_size;   /* guest RAM in bytes */
    /* Shadow mode (vmm run --paging shadow): the VMM's description of the
     * demand-mapped region and the shootdown mailbox; NULL in identity mode. */
    const struct hv_shadow_info *shadow;
};

/* Defined by each guest; runs on every vCPU. */
int guest_main(const struct guest_boot *boot);

/* Stops the VM: writes `code` to HV_DEBUG_EXIT_PORT, then cli; hlt forever. */
RT_NORETURN void exit(int code);
/* cli; hlt forever (this vCPU only). */
RT_NORETURN void halt_forever(void);

/* This vCPU's index (per-vCPU state, valid once guest_main runs). */
uint32_t rt_cpu_index(void);

/* ---- port I/O, rdtsc, cpu_relax --------------------------------------------- */

#include "x86_io.h"

/* ---- hypercalls ------------------------------------------------------------ */

/*
 * Makes the hypercall whose request block starts at `block` (block->nr and
 * block->size filled in) and returns the VMM's status (enum hv_status); the
 * VMM may have filled the block's output fields. A block whose address does
 * not fit in 32 bits (a stack above 4 GiB) is passed through this vCPU's
 * bounce buffer of RT_BOUNCE_SIZE bytes below 4 GiB.
 */
uint32_t hv_call(struct hv_call_header *block);
/* The raw call: a 32-bit OUT of `gpa` to HV_HYPERCALL_PORT; returns EAX. */
static inline uint32_t hv_call_raw(uint32_t gpa)
{
    __asm__ volatile("outl %%eax, %%dx" : "+a"(gpa) : "d"((uint16_t)HV_HYPERCALL_PORT) : "memory");
    return gpa;
}
#define RT_BOUNCE_SIZE 256

/* ---- exceptions ------------------------------------------------------------ */

/*
 * Catching expected CPU exceptions (vectors 0-31), setjmp-style, per vCPU:
 *
 *     struct rt_trap t;
 *     if (rt_try(&t, RT_EXC_VEC(6)) == 0) {
 *         __asm__ volatile("ud2");   // the code expected to fault
 *         rt_try_end(&t);            // reached only without an exception
 *     } else {
 *         // caught: t.exc is the report sent to the VMM (vector, error
 *         // code, rip, cr2, gprs ...), t.status the VMM's answer to it.
 *     }
 *
 * rt_try() arms `t` on this vCPU and returns 0. When an exception whose
 * vector is in `vectors` arrives while `t` is the innermost armed trap, the
 * runtime reports it with HV_EXC_RECOVERABLE, disarms `t` and resumes as if
 * rt_try() returned 1 (callee-saved registers and RSP restored; iretq).
 * Like setjmp: the caller of rt_try() must not have returned before the
 * exception, and its non-volatile locals changed after rt_try() are
 * indeterminate in the catch branch. Traps nest (each records the previous
 * one); rt_try_end() disarms. Any exception that is not expected is reported
 * without HV_EXC_RECOVERABLE and the vCPU halts.
 */
struct rt_trap {
    /* Saved by rt_try() (offsets RT_TRAP_*). */
    uint64_t rbx, rbp, r12, r13, r14, r15, rsp, rip;
    struct rt_trap *prev;
    uint32_t vectors; /* bit v: vector v is expected */
    /* Filled when an exception was caught. */
    uint32_t status; /* enum hv_status of the HV_CALL_EXCEPTION report */
    /* Shadow mode, #PF: the VMM's answer to HV_CALL_PAGE_FAULT (HV_E_NO_MEMSLOT,
     * HV_E_REFUSED, ...); HV_OK for every other exception. */
    uint32_t fault_status;
    struct hv_call_exception exc;
};

#define RT_EXC_VEC(v) (1u << (v))
#define RT_EXC_ANY 0xffffffffu

int rt_try(struct rt_trap *t, uint32_t vectors) __attribute__((returns_twice));
void rt_try_end(struct rt_trap *t);

/* ---- shadow paging (vmm run --paging shadow) ------------------------------ */

/*
 * In shadow mode every #PF goes to the VMM first (HV_CALL_PAGE_FAULT); when
 * it resolves the fault the access is retried, otherwise the fault is an
 * exception as usual (rt_try catches it, with t.fault_status saying why).
 * NMIs are TLB shootdown requests (abi.h), handled and acknowledged by the
 * runtime. Both are invisible to guest code.
 *
 * A write refused because the host holds the page read-only for a while (the
 * `protect` churn) can be waited out instead: with rt_fault_retry_refused(1)
 * this vCPU retries HV_E_REFUSED faults until they resolve.
 */
void rt_fault_retry_refused(int on);
/* The NMIs this vCPU's shootdown handler ran, and the page faults this
 * vCPU sent to the VMM. */
uint64_t rt_shootdown_nmis(void);
uint64_t rt_page_faults(void);
/* One host operation on the page of `address` (HV_CALL_HOST_OP); returns the
 * status, and in *changed (if not NULL) whether the host changed anything. */
uint32_t rt_host_op(uint32_t op, uint64_t address, uint64_t address2, uint64_t *changed);

static inline void invlpg(uint64_t address) { __asm__ volatile("invlpg (%0)" : : "r"(address) : "memory"); }

/* x86-64 page-table entry bits, for guests that read or write tables. */
#define PTE_P 0x1ull
#define PTE_RW 0x2ull
#define PTE_A 0x20ull
#define PTE_PS 0x80ull
#define PTE_NX (1ull << 63)
#define PTE_ADDR 0x000ffffffffff000ull

static inline uint64_t read_cr3(void)
{
    uint64_t v;
    __asm__ volatile("mov %%cr3, %0" : "=r"(v));
    return v;
}
static inline void write_cr3(uint64_t v) { __asm__ volatile("mov %0, %%cr3" : : "r"(v) : "memory"); }

/* A CR3 of the guest's own, apart from the VMM's tables: the first 4 GiB
 * identity-mapped in 2 MiB pages (built on the first call; any vCPU). In
 * shadow mode it reaches what the VMM's tables leave unmapped, the mirror of
 * those tables included; nothing of the region is mapped through it. */
uint64_t rt_identity_cr3(void);

/* ---- serial console -------------------------------------------------------- */

/* Polled 16550 at HV_SERIAL_PORT. printf/puts/putchar each hold the console
 * lock for the whole call, so lines from different vCPUs do not mix. */
int putchar(int c);
int puts(const char *s); /* appends '\n' */
int printf(const char *fmt, ...) RT_PRINTF(1, 2);
int vprintf(const char *fmt, va_list ap) RT_PRINTF(1, 0);
int snprintf(char *buf, size_t size, const char *fmt, ...) RT_PRINTF(3, 4);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) RT_PRINTF(3, 0);

/* ---- memory and strings ---------------------------------------------------- */

#include "rt_string.h"

/* ---- spinlock -------------------------------------------------------------- */

typedef struct {
    uint32_t locked;
} rt_spinlock;

static inline void rt_spin_lock(rt_spinlock *l)
{
    while (__atomic_exchange_n(&l->locked, 1, __ATOMIC_ACQUIRE))
        while (__atomic_load_n(&l->locked, __ATOMIC_RELAXED))
            cpu_relax();
}
static inline void rt_spin_unlock(rt_spinlock *l) { __atomic_store_n(&l->locked, 0, __ATOMIC_RELEASE); }

/* ---- command line and synchronisation ------------------------------------- */

/* `key=N` as a blank-separated word of `cmdline`: 1 and *value set when
 * present and a decimal number, 0 when absent, -1 when malformed. */
int rt_arg_u64(const char *cmdline, const char *key, uint64_t *value);
/* 1 when `word` is a blank-separated word of `cmdline`. */
int rt_arg_word(const char *cmdline, const char *word);

/* A reusable barrier for `n` vCPUs (zero-initialised). Waiters spin; when
 * n > RT_BARRIER_YIELD_ABOVE they spin a little, then yield their host CPU
 * with HV_CALL_YIELD. */
#define RT_BARRIER_YIELD_ABOVE 16u
struct rt_barrier {
    uint32_t arrived, gen;
};
void rt_barrier_wait(struct rt_barrier *b, uint32_t n);

/* ---- misc ------------------------------------------------------------------ */

#define RT_ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline uint64_t read_cr2(void)
{
    uint64_t v;
    __asm__ volatile("mov %%cr2, %0" : "=r"(v));
    return v;
}
static inline uint64_t read_rsp(void)
{
    uint64_t v;
    __asm__ volatile("mov %%rsp, %0" : "=r"(v));
    return v;
}

#endif /* !__ASSEMBLER__ */
#endif
