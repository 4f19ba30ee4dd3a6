/*
 * fuzz: runs a byte program from the command line (prog=HEX) on every vCPU
 * in shadow mode; `vmm fuzz-guest` (the `guest` fuzz target) builds the
 * command line from an input file. Two bytes per operation, [op | vcpu << 4]
 * then [page] (page modulo the region's pages). Every vCPU walks the whole
 * program, performs the operations addressed to it (vcpu modulo the vCPU
 * count) and meets the others at every sync:
 *
 *   op 0-2   write: a new stamp into this vCPU's word of the page
 *   op 3-5   read: the word must hold this vCPU's last stamp there, or 0
 *            when a host unmap of the page started since that write
 *   op 6-12  host operation on the page (HV_CALL_HOST_OP): migrate, unmap,
 *            protect (read-only), unprotect, merge with the next page,
 *            swap out, age
 *   op 13    invlpg of the page
 *   op 14    page byte below 0x80: pause (a short spin). From 0x80: scribble
 *            on the VMM's table mirror (abi.h, "Shadow paging"): the entry
 *            on the way to the page at level 1, 2 or 3 (bits 5-6: 0 and 3
 *            pick the leaf; these levels map only the region) becomes
 *            not-present, zero or (bit 4) every bit but present. The VMM
 *            must heal it at the next fault there: the entry it holds is
 *            still present, so the access cannot fault forever.
 *   op 15    sync: every vCPU waits for all of them (whoever it names)
 *
 * A write to a page the host holds read-only is refused (HV_E_REFUSED): the
 * #PF is caught and the write skipped. At the end vCPU 0 hands every vCPU's
 * last stamp of every page to the VMM (HV_CALL_VERIFY), which reads them
 * through the host tables: a write that went to a stale frame is lost there.
 *
 * Prints "fuzz: N ops on M vCPUs, ..., lost_writes=L"; exits 0 when nothing
 * was lost, 1 otherwise, 2 for a bad command line, too many vCPUs or pages,
 * or identity mode.
 */
#include "rt.h"

#define PAGE 4096ull
#define MAX_PROG 1024
#define MAX_CPUS 8
#define MAX_PAGES 64

enum { OP_HOST_FIRST = 6, OP_INVLPG = 13, OP_PAUSE_OR_SCRIBBLE = 14, OP_SYNC = 15 };

static uint64_t scribbles[MAX_CPUS];

struct model {
    uint64_t value;      /* the last stamp written, 0 if none */
    uint64_t unmap_done; /* unmap_done[page] read before that write */
};

static uint8_t prog[MAX_PROG];
static uint64_t prog_len;
static struct model models[MAX_CPUS][MAX_PAGES];
static struct rt_barrier barrier;
static volatile uint32_t decoded; /* vCPU 0 decoded prog[] */
static uint64_t writes[MAX_CPUS], refused[MAX_CPUS], reads[MAX_CPUS], host_ops[MAX_CPUS], lost_seen[MAX_CPUS];
static uint32_t reported;
static struct hv_stamp stamps[MAX_CPUS * MAX_PAGES];

static const uint32_t host_op_of[7] = {HV_HOST_MIGRATE, HV_HOST_UNMAP,   HV_HOST_PROTECT, HV_HOST_UNPROTECT,
                                       HV_HOST_MERGE,   HV_HOST_SWAP,    HV_HOST_AGE};

static int hex_digit(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* prog=HEX as a word of the command line into prog[]; -1 when absent or malformed. */
static int decode_prog(const char *cmdline)
{
    const char *p = strstr(cmdline, "prog=");
    if (!p || (p != cmdline && p[-1] != ' '))
        return -1;
    p += 5;
    prog_len = 0;
    while (*p && *p != ' ') {
        int hi = hex_digit(p[0]), lo = hi < 0 ? -1 : hex_digit(p[1]);
        if (lo < 0 || prog_len == MAX_PROG)
            return -1;
        prog[prog_len++] = (uint8_t)(hi << 4 | lo);
        p += 2;
    }
    return 0;
}

/* Op 14 from 0x80: `value` (not present) into the mirror's entry of `level`
 * on the way to `addr`, found by walking the mirror from CR3 with our own
 * tables (rt_identity_cr3) loaded: the VMM maps no table frame for us. Nothing happens when the walk stops above `level` (an
 * earlier scribble or an absent table). The region is not touched while our
 * tables are loaded: they would bypass the VMM's. */
static void scribble(uint64_t addr, int level, uint64_t value)
{
    const uint64_t vmm = read_cr3();
    write_cr3(rt_identity_cr3());
    uint64_t table = vmm & PTE_ADDR;
    for (int l = 4;; l--) {
        volatile uint64_t *e = (volatile uint64_t *)(uintptr_t)table + ((addr >> (12 + 9 * (l - 1))) & 511);
        if (l == level) {
            *e = value;
            scribbles[rt_cpu_index()]++;
            break;
        }
        const uint64_t v = *e;
        if (!(v & PTE_P) || (v & PTE_PS) || (v & PTE_ADDR) >= (4ull << 30))
            break;
        table = v & PTE_ADDR;
    }
    write_cr3(vmm);
}

/* The store, or 0 when the host refused it (a read-only page). */
static int try_write(volatile uint64_t *word, uint64_t value)
{
    struct rt_trap t;
    if (rt_try(&t, RT_EXC_VEC(14)) == 0) {
        *word = value;
        rt_try_end(&t);
        return 1;
    }
    if (t.fault_status == HV_E_REFUSED)
        return 0;
    printf("fuzz: vCPU %u: a write to 0x%lx faulted with status %u (only HV_E_REFUSED is expected)\n",
           rt_cpu_index(), (unsigned long)(uintptr_t)word, t.fault_status);
    exit(1);
}

static int fail(const struct guest_boot *boot, const char *why)
{
    if (boot->vcpu == 0) {
        printf("fuzz: %s\n", why);
        return 2;
    }
    halt_forever();
}

int guest_main(const struct guest_boot *boot)
{
    const struct hv_shadow_info *sh = boot->shadow;
    const uint32_t n = boot->ncpus, v = boot->vcpu;
    if (!sh)
        return fail(boot, "needs shadow paging (vmm fuzz-guest runs it so)");
    if (n > MAX_CPUS)
        return fail(boot, "at most 8 vCPUs");
    const uint64_t pages = sh->region_size / PAGE;
    if (pages == 0 || pages > MAX_PAGES)
        return fail(boot, "the region must hold 1..64 pages");
    if (v == 0) {
        if (decode_prog(boot->cmdline) < 0)
            return fail(boot, "expected prog=HEX (at most 1024 bytes) on the command line");
        __atomic_store_n(&decoded, 1, __ATOMIC_RELEASE);
    } else {
        while (!__atomic_load_n(&decoded, __ATOMIC_ACQUIRE))
            cpu_relax();
    }
    const volatile uint64_t *unmap_done = (const volatile uint64_t *)(uintptr_t)sh->unmap_done;
    const volatile uint64_t *unmap_started = (const volatile uint64_t *)(uintptr_t)sh->unmap_started;
    struct model *mine = models[v];
    uint64_t seq = 0;

    rt_barrier_wait(&barrier, n);
    for (uint64_t i = 0; i + 1 < prog_len; i += 2) {
        const uint32_t op = prog[i] & 15, who = (uint32_t)(prog[i] >> 4) % n;
        const uint64_t page = prog[i + 1] % pages;
        const uint64_t addr = sh->region_base + page * PAGE;
        volatile uint64_t *word = (volatile uint64_t *)(uintptr_t)(addr + 8ull * v);
        if (op == OP_SYNC) {
            rt_barrier_wait(&barrier, n);
            continue;
        }
        if (who != v)
            continue;
        if (op <= 2) {
            const uint64_t stamp = (uint64_t)(v + 1) << 40 | ++seq;
            const uint64_t done = __atomic_load_n(&unmap_done[page], __ATOMIC_ACQUIRE);
            if (try_write(word, stamp)) {
                mine[page] = (struct model){stamp, done};
                writes[v]++;
            } else {
                refused[v]++;
            }
        } else if (op <= 5) {
            const uint64_t cur = *word;
            reads[v]++;
            if (cur != mine[page].value &&
                !(cur == 0 && __atomic_load_n(&unmap_started[page], __ATOMIC_ACQUIRE) > mine[page].unmap_done)) {
                lost_seen[v]++;
                if (__atomic_fetch_add(&reported, 1, __ATOMIC_RELAXED) < 8)
                    printf("fuzz: vCPU %u: page %lu reads 0x%lx, last written 0x%lx\n", v, (unsigned long)page,
                           (unsigned long)cur, (unsigned long)mine[page].value);
            }
            if (cur == 0)
                mine[page].value = 0; /* discarded by an unmap: 0 from now on */
        } else if (op < OP_INVLPG) {
            const uint64_t other = sh->region_base + ((page + 1) % pages) * PAGE;
            const uint32_t host_op = host_op_of[op - OP_HOST_FIRST];
            rt_host_op(host_op, addr, host_op == HV_HOST_MERGE ? other : 0, 0);
            host_ops[v]++;
        } else if (op == OP_INVLPG) {
            invlpg(addr);
        } else if (prog[i + 1] & 0x80) {
            static const int level_of[4] = {1, 2, 3, 1};
            scribble(addr, level_of[(prog[i + 1] >> 5) & 3], (prog[i + 1] & 0x10) ? ~PTE_P : 0);
        } else {
            for (int k = 0; k < 64; k++)
                cpu_relax();
        }
    }
    rt_barrier_wait(&barrier, n);
    if (v != 0)
        halt_forever();

    uint64_t count = 0, total_writes = 0, total_refused = 0, total_reads = 0, total_host = 0, guest_lost = 0,
             total_scribbles = 0;
    for (uint32_t c = 0; c < n; c++) {
        for (uint64_t p = 0; p < pages; p++)
            stamps[count++] = (struct hv_stamp){sh->region_base + p * PAGE + 8ull * c, models[c][p].value,
                                                models[c][p].unmap_done};
        total_writes += writes[c];
        total_refused += refused[c];
        total_reads += reads[c];
        total_host += host_ops[c];
        guest_lost += lost_seen[c];
        total_scribbles += scribbles[c];
    }
    struct hv_call_verify call = {
        .hdr = {HV_CALL_VERIFY, sizeof(call)},
        .table = (uint64_t)(uintptr_t)stamps,
        .count = count,
        .guest_lost = guest_lost,
    };
    const uint32_t status = hv_call(&call.hdr);
    printf("fuzz: %lu ops on %u vCPUs, %lu writes (%lu refused), %lu reads, %lu host ops, %lu table scribbles, "
           "%lu stamps checked, %lu losses seen while running, lost_writes=%lu\n",
           (unsigned long)(prog_len / 2), n, (unsigned long)total_writes, (unsigned long)total_refused,
           (unsigned long)total_reads, (unsigned long)total_host, (unsigned long)total_scribbles,
           (unsigned long)call.checked,
           (unsigned long)guest_lost, (unsigned long)call.lost);
    if (status != HV_OK) {
        printf("fuzz: HV_CALL_VERIFY failed with status %u\n", status);
        return 1;
    }
    return call.lost == 0 && call.checked == count ? 0 : 1;
}
