/*
 * faults: exercises CPU exception reporting and hypercall error paths. The
 * command line picks the test:
 *
 *   "" or "recover"   every vCPU raises #UD, #GP and #PF under rt_try(); the
 *                     runtime reports each one as recoverable and resumes;
 *                     the guest checks vector, error code, RIP and CR2.
 *                     Exit 0 when all matched on every vCPU, else 1.
 *   "unhandled"       an unexpected #PF: reported without
 *                     HV_EXC_RECOVERABLE, the VMM stops the VM.
 *   "triple"          an IDT with limit 0, then ud2: a triple fault.
 *   "wild-hypercall"  hypercalls the VMM must refuse (block outside RAM,
 *                     unknown call, bad size) and one good ECHO. Exit 0 when
 *                     every status matched, else 1.
 *   "wild-rip"        jumps to an identity-mapped address outside RAM: the
 *                     VMM cannot fetch the instruction.
 *   "bad-stack"       RSP pointed at unmapped memory, then ud2: delivering
 *                     #UD and then #PF fails, the CPU raises #DF, which runs
 *                     on its own IST stack and is reported (the VMM stops
 *                     the VM) instead of becoming a triple fault.
 *   "unclaimed"       port and MMIO accesses no device claims: reads must
 *                     return all ones and the guest continues (exit 0), unless
 *                     the VMM runs with --strict-io, which stops the VM.
 *
 * Anything else: an error message and exit 2. Tests other than "recover"
 * run on vCPU 0 only.
 */
#include "rt.h"

#define VEC_UD 6
#define VEC_GP 13
#define VEC_PF 14

#define NONCANONICAL 0x8000000000000000ull
#define PML4_SPAN (1ull << 39) /* 512 GiB: what one PML4 entry maps */
#ifndef SPIN_LIMIT
#define SPIN_LIMIT 2000000000ull /* pause iterations vCPU 0 waits for the others */
#endif

/* ---- raising exceptions ------------------------------------------------ */

/* Each stores the address of the faulting instruction in *rip, then faults. */
typedef void raise_fn(uint64_t *rip, uint64_t arg);

static __attribute__((noinline)) void raise_ud(uint64_t *rip, uint64_t arg)
{
    (void)arg;
    __asm__ volatile("lea 1f(%%rip), %%rax\n\t"
                     "mov %%rax, (%0)\n"
                     "1:\tud2"
                     :
                     : "D"(rip)
                     : "rax", "memory");
}

/* A load from `addr` through RSI (not RSP/RBP: a non-canonical address
 * through those raises #SS instead of #GP). */
static __attribute__((noinline)) void raise_load(uint64_t *rip, uint64_t addr)
{
    __asm__ volatile("lea 1f(%%rip), %%rax\n\t"
                     "mov %%rax, (%0)\n"
                     "1:\tmov (%1), %%rax"
                     :
                     : "D"(rip), "S"(addr)
                     : "rax", "memory");
}

/* An address in the first PML4 slot the VMM's identity map (RAM, at least
 * the first 4 GiB, in PML4 slot 0) leaves empty. */
static uint64_t unmapped_address(uint64_t ram_size)
{
    uint64_t a = PML4_SPAN;
    while (a < ram_size)
        a += PML4_SPAN;
    return a;
}

/* ---- recover ------------------------------------------------------------- */

static uint64_t fault_rip[RT_MAX_CPUS]; /* per vCPU: where the fault should be */
static uint32_t cpus_done;
static uint32_t cpus_failed;

struct expectation {
    const char *name;
    unsigned vector;
    raise_fn *raise;
    uint64_t arg;
    uint64_t error_code;
    int check_cr2;
};

/* Raises one exception under rt_try() and checks the report; returns 1 on
 * success. vCPU 0 prints what it caught; the others only problems. */
static int expect(const struct expectation *e, uint32_t cpu, int verbose)
{
    struct rt_trap t;
    if (rt_try(&t, RT_EXC_ANY) == 0) {
        e->raise(&fault_rip[cpu], e->arg);
        rt_try_end(&t);
        printf("faults: vCPU %u: %s was not raised\n", cpu, e->name);
        return 0;
    }

    const struct hv_call_exception *x = &t.exc;
    int ok = 1;
    if (x->vector != e->vector) {
        printf("faults: vCPU %u: expected %s (vector %u), caught vector %lu at rip 0x%lx\n", cpu, e->name,
               e->vector, (unsigned long)x->vector, (unsigned long)x->rip);
        return 0;
    }
    if (x->error_code != e->error_code) {
        printf("faults: vCPU %u: %s error code 0x%lx, expected 0x%lx\n", cpu, e->name, (unsigned long)x->error_code,
               (unsigned long)e->error_code);
        ok = 0;
    }
    if (x->rip != fault_rip[cpu]) {
        printf("faults: vCPU %u: %s at rip 0x%lx, expected 0x%lx\n", cpu, e->name, (unsigned long)x->rip,
               (unsigned long)fault_rip[cpu]);
        ok = 0;
    }
    if (e->check_cr2 && x->cr2 != e->arg) {
        printf("faults: vCPU %u: %s cr2 0x%lx, expected 0x%lx\n", cpu, e->name, (unsigned long)x->cr2,
               (unsigned long)e->arg);
        ok = 0;
    }
    if (x->cs != HV_GDT_CODE64 || x->flags != HV_EXC_RECOVERABLE) {
        printf("faults: vCPU %u: %s report has cs 0x%lx flags 0x%x\n", cpu, e->name, (unsigned long)x->cs,
               x->flags);
        ok = 0;
    }
    if (t.status != HV_OK) {
        printf("faults: vCPU %u: the VMM answered the %s report with status %u\n", cpu, e->name, t.status);
        ok = 0;
    }
    if (ok && verbose) {
        if (e->check_cr2)
            printf("faults: caught %s (vector %u) error code 0x%lx cr2 0x%lx at rip 0x%lx\n", e->name, e->vector,
                   (unsigned long)x->error_code, (unsigned long)x->cr2, (unsigned long)x->rip);
        else
            printf("faults: caught %s (vector %u) error code 0x%lx at rip 0x%lx\n", e->name, e->vector,
                   (unsigned long)x->error_code, (unsigned long)x->rip);
    }
    return ok;
}

static int test_recover(const struct guest_boot *boot)
{
    const struct expectation tests[] = {
        {"#UD", VEC_UD, raise_ud, 0, 0, 0},
        /* A non-canonical load: #GP(0). */
        {"#GP", VEC_GP, raise_load, NONCANONICAL, 0, 0},
        /* A supervisor read of a non-present page: #PF, error code 0. */
        {"#PF", VEC_PF, raise_load, unmapped_address(boot->ram_size), 0, 1},
    };
    uint32_t cpu = boot->vcpu;
    int verbose = cpu == 0;
    int passed = 0;
    for (unsigned i = 0; i < RT_ARRAY_SIZE(tests); i++)
        passed += expect(&tests[i], cpu, verbose);
    int ok = passed == (int)RT_ARRAY_SIZE(tests);

    if (cpu != 0) {
        if (!ok)
            __atomic_fetch_add(&cpus_failed, 1, __ATOMIC_RELAXED);
        __atomic_fetch_add(&cpus_done, 1, __ATOMIC_RELEASE);
        halt_forever();
    }

    uint32_t others = boot->ncpus - 1;
    uint64_t spins = 0;
    while (__atomic_load_n(&cpus_done, __ATOMIC_ACQUIRE) < others && spins++ < SPIN_LIMIT)
        cpu_relax();
    uint32_t done = __atomic_load_n(&cpus_done, __ATOMIC_ACQUIRE);
    uint32_t failed = __atomic_load_n(&cpus_failed, __ATOMIC_RELAXED);
    if (done != others) {
        printf("faults: only %u of the %u other vCPUs finished\n", done, others);
        ok = 0;
    }
    if (failed) {
        printf("faults: %u other vCPUs failed\n", failed);
        ok = 0;
    }
    if (!ok) {
        printf("faults: FAILED\n");
        return 1;
    }
    if (boot->ncpus == 1)
        printf("faults: all 3 reported\n");
    else
        printf("faults: all 3 reported on each of %u vCPUs\n", boot->ncpus);
    return 0;
}

/* ---- crashes --------------------------------------------------------------- */

static int test_unhandled(const struct guest_boot *boot)
{
    uint64_t addr = unmapped_address(boot->ram_size);
    uint64_t rip;
    printf("faults: raising an unexpected #PF at 0x%lx\n", (unsigned long)addr);
    raise_load(&rip, addr);
    printf("faults: the unexpected #PF returned\n");
    return 1;
}

static int test_triple(void)
{
    struct __attribute__((packed)) {
        uint16_t limit;
        uint64_t base;
    } empty = {0, 0};
    printf("faults: loading an IDT with limit 0, then ud2 (a triple fault)\n");
    __asm__ volatile("lidt %0\n\tud2" : : "m"(empty) : "memory");
    printf("faults: survived ud2 with an empty IDT\n");
    return 1;
}

static int test_wild_rip(const struct guest_boot *boot)
{
    /* The ABI maps RAM and the first 4 GiB: anything in [ram_size, 4 GiB)
     * is mapped but not backed. */
    uint64_t target = 0xc0000000u;
    if (boot->ram_size > target)
        target = (boot->ram_size + 0x1fffff) & ~0x1fffffull;
    if (target >= (1ull << 32)) {
        printf("faults: wild-rip needs less than 4 GiB of RAM (have 0x%lx bytes)\n", (unsigned long)boot->ram_size);
        return 1;
    }
    printf("faults: jumping to 0x%lx (identity-mapped, outside RAM)\n", (unsigned long)target);
    __asm__ volatile("jmp *%0" : : "r"(target) : "memory");
    __builtin_unreachable();
}

static int test_unclaimed(const struct guest_boot *boot)
{
    /* Port 0x2f8 is COM2 (not emulated); the MMIO address lies in the
     * identity-mapped hole above RAM, where no memslot exists, so the read
     * becomes an MMIO exit that no device claims. */
    uint64_t mmio = 0xd0000000u;
    if (boot->ram_size > mmio) {
        printf("faults: unclaimed needs less than 3.25 GiB of RAM\n");
        return 1;
    }
    outb(0x2f8, 0x5a);
    outb(0x2f8, 0x5b); /* same port again: the VMM logs it once */
    uint8_t port = inb(0x2f8);
    uint32_t word = *(volatile uint32_t *)(uintptr_t)mmio;
    *(volatile uint32_t *)(uintptr_t)mmio = 0x12345678;
    printf("faults: unclaimed: port read 0x%x, mmio read 0x%x\n", port, word);
    if (port != 0xff || word != 0xffffffffu) {
        printf("faults: unclaimed: expected all ones\n");
        return 1;
    }
    printf("faults: unclaimed: ok\n");
    return 0;
}

/* ---- hypercalls ------------------------------------------------------------- */

static unsigned hc_checks, hc_failures;

static void hc_expect(const char *what, uint32_t status, uint32_t want)
{
    hc_checks++;
    if (status == want) {
        printf("faults: wild-hypercall: %s -> status %u, ok\n", what, status);
    } else {
        printf("faults: wild-hypercall: %s -> status %u, expected %u\n", what, status, want);
        hc_failures++;
    }
}

static int test_wild_hypercall(const struct guest_boot *boot)
{
    uint64_t ram = boot->ram_size;

    /* A block far outside RAM. */
    if (ram <= 0xfffff000u)
        hc_expect("block at 0xfffff000 (outside RAM)", hv_call_raw(0xfffff000u), HV_E_FAULT);
    else
        printf("faults: wild-hypercall: RAM reaches 0xfffff000, skipping that check\n");

    /* A header straddling the end of RAM (nothing is written there). */
    if (ram <= (1ull << 32)) {
        char what[64];
        snprintf(what, sizeof(what), "block at 0x%lx (straddles the end of RAM)", (unsigned long)(ram - 4));
        hc_expect(what, hv_call_raw((uint32_t)(ram - 4)), HV_E_FAULT);
    }

    struct hv_call_header unknown = {0x7fffffffu, sizeof(unknown)};
    hc_expect("unknown call 0x7fffffff", hv_call(&unknown), HV_E_UNKNOWN_CALL);

    struct hv_call_echo echo = {{HV_CALL_ECHO, sizeof(echo) - 8}, 41, 0};
    hc_expect("ECHO with a short size", hv_call(&echo.hdr), HV_E_BAD_SIZE);

    struct hv_call_echo good = {{HV_CALL_ECHO, sizeof(good)}, 0x1234567890abcdefull, 0};
    hc_expect("ECHO", hv_call(&good.hdr), HV_OK);
    hc_checks++;
    if (good.out != good.in + 1) {
        printf("faults: wild-hypercall: ECHO of 0x%lx returned 0x%lx\n", (unsigned long)good.in,
               (unsigned long)good.out);
        hc_failures++;
    }

    if (hc_failures) {
        printf("faults: wild-hypercall: %u of %u checks failed\n", hc_failures, hc_checks);
        return 1;
    }
    printf("faults: wild-hypercall: all %u checks passed\n", hc_checks);
    return 0;
}

/* ---- bad-stack ----------------------------------------------------------- */

static int test_bad_stack(const struct guest_boot *boot)
{
    uint64_t bad = unmapped_address(boot->ram_size) + 0x1000;
    __asm__ volatile("mov %0, %%rsp\n\tud2" : : "r"(bad) : "memory");
    return 1; /* not reached */
}

/* ---- main ---------------------------------------------------------------- */

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

int guest_main(const struct guest_boot *boot)
{
    /* The command line, without surrounding blanks. */
    char mode[64];
    const char *s = boot->cmdline;
    while (is_space(*s))
        s++;
    size_t n = strlen(s);
    while (n && is_space(s[n - 1]))
        n--;
    if (n >= sizeof(mode))
        n = sizeof(mode) - 1;
    memcpy(mode, s, n);
    mode[n] = 0;

    if (!strcmp(mode, "") || !strcmp(mode, "recover"))
        return test_recover(boot);
    if (boot->vcpu != 0)
        halt_forever();
    if (!strcmp(mode, "unhandled"))
        return test_unhandled(boot);
    if (!strcmp(mode, "triple"))
        return test_triple();
    if (!strcmp(mode, "wild-hypercall"))
        return test_wild_hypercall(boot);
    if (!strcmp(mode, "wild-rip"))
        return test_wild_rip(boot);
    if (!strcmp(mode, "unclaimed"))
        return test_unclaimed(boot);
    if (!strcmp(mode, "bad-stack"))
        return test_bad_stack(boot);
    printf("faults: unknown command line '%s' (want recover, unhandled, triple, wild-hypercall, wild-rip, unclaimed or bad-stack)\n",
           boot->cmdline);
    return 2;
}
