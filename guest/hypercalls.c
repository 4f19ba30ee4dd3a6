/*
 * hypercalls: the shadow-paging hypercalls with good and malformed
 * arguments, from vCPU 0. Every malformed call must get its error status and
 * change nothing; the good ones must do what abi.h says (host operations
 * keep or discard contents, protect refuses writes, merge shares a frame
 * until a write breaks it). In identity mode every shadow call must answer
 * HV_E_NOT_SHADOW.
 *
 * Command line: "" runs the checks; "strict" touches an address outside
 * every memslot under rt_try(), which the runtime would catch, but which a
 * VMM started with --strict-faults must turn into a crash report.
 * Exit 0 when all checks pass, 1 otherwise.
 */
#include "rt.h"

#define PAGE 4096ull
#define VEC_PF 14

static unsigned checks, failures;

static void expect(const char *what, uint64_t got, uint64_t want)
{
    checks++;
    if (got == want)
        return;
    failures++;
    printf("hypercalls: %s: got %lu, expected %lu\n", what, (unsigned long)got, (unsigned long)want);
}

static uint32_t page_fault(uint64_t address, uint32_t error_code, uint32_t reserved, uint32_t size)
{
    struct hv_call_page_fault c;
    memset(&c, 0, sizeof(c));
    c.hdr.nr = HV_CALL_PAGE_FAULT;
    c.hdr.size = size;
    c.address = address;
    c.error_code = error_code;
    c.reserved = reserved;
    return hv_call(&c.hdr);
}

static uint32_t host_op_raw(uint32_t op, uint32_t reserved, uint64_t a, uint64_t a2)
{
    struct hv_call_host_op c;
    memset(&c, 0, sizeof(c));
    c.hdr.nr = HV_CALL_HOST_OP;
    c.hdr.size = sizeof(c);
    c.op = op;
    c.reserved = reserved;
    c.address = a;
    c.address2 = a2;
    return hv_call(&c.hdr);
}

static uint32_t verify(struct hv_stamp *table, uint64_t count, uint64_t guest_lost, uint64_t *lost)
{
    struct hv_call_verify c = {.hdr = {HV_CALL_VERIFY, sizeof(c)},
                               .table = (uint64_t)(uintptr_t)table,
                               .count = count,
                               .guest_lost = guest_lost};
    uint32_t s = hv_call(&c.hdr);
    if (lost)
        *lost = c.lost;
    return s;
}

/* A load or store under rt_try(): the fault status, or HV_OK when it ran. */
static uint32_t try_access(volatile uint64_t *p, int write, uint64_t value, uint64_t *read)
{
    struct rt_trap t;
    if (rt_try(&t, 1u << VEC_PF) == 0) {
        if (write)
            *p = value;
        else if (read)
            *read = *p;
        else
            (void)*p;
        rt_try_end(&t);
        return HV_OK;
    }
    return t.fault_status;
}

/* YIELD works in both modes: a bare header, nothing else. */
static void yield_checks(void)
{
    struct {
        struct hv_call_yield call;
        uint64_t pad;
    } y = {{{HV_CALL_YIELD, sizeof(struct hv_call_yield)}}, 0};
    expect("YIELD", hv_call(&y.call.hdr), HV_OK);
    y.call.hdr.size = sizeof(y);
    expect("YIELD with a 16-byte size", hv_call(&y.call.hdr), HV_E_BAD_SIZE);
}

static int identity_checks(void)
{
    static struct hv_stamp st;
    expect("PAGE_FAULT in identity mode", page_fault(0x1000, 0, 0, sizeof(struct hv_call_page_fault)), HV_E_NOT_SHADOW);
    expect("HOST_OP in identity mode", host_op_raw(HV_HOST_MIGRATE, 0, 0x1000, 0), HV_E_NOT_SHADOW);
    expect("VERIFY in identity mode", verify(&st, 0, 0, NULL), HV_E_NOT_SHADOW);
    return 0;
}

static void malformed(const struct hv_shadow_info *sh, uint64_t ram)
{
    uint64_t r = sh->region_base, end = sh->region_base + sh->region_size;
    const uint32_t pf = sizeof(struct hv_call_page_fault);
    expect("PAGE_FAULT with unknown error-code bits", page_fault(r, 1u << 15, 0, pf), HV_E_BAD_ARG);
    expect("PAGE_FAULT with reserved != 0", page_fault(r, 0, 7, pf), HV_E_BAD_ARG);
    expect("PAGE_FAULT at 2^47", page_fault(1ull << 47, 0, 0, pf), HV_E_BAD_ARG);
    expect("PAGE_FAULT at ~0", page_fault(~0ull, 2, 0, pf), HV_E_BAD_ARG);
    expect("PAGE_FAULT with a short size", page_fault(r, 0, 0, pf - 8), HV_E_BAD_SIZE);
    expect("PAGE_FAULT past the region", page_fault(end, 2, 0, pf), HV_E_NO_MEMSLOT);
    expect("PAGE_FAULT in the static image", page_fault(0x200000, 2, 0, pf), HV_E_NO_MEMSLOT);
    expect("HOST_OP with op 99", host_op_raw(99, 0, r, 0), HV_E_BAD_ARG);
    expect("HOST_OP with op HV_HOST_NOPS", host_op_raw(HV_HOST_NOPS, 0, r, 0), HV_E_BAD_ARG);
    expect("HOST_OP with reserved != 0", host_op_raw(HV_HOST_UNMAP, 1, r, 0), HV_E_BAD_ARG);
    expect("HOST_OP migrate with address2", host_op_raw(HV_HOST_MIGRATE, 0, r, r + PAGE), HV_E_BAD_ARG);
    expect("HOST_OP at 2^63", host_op_raw(HV_HOST_UNMAP, 0, 1ull << 63, 0), HV_E_BAD_ARG);
    expect("HOST_OP outside every memslot", host_op_raw(HV_HOST_UNMAP, 0, 0x200000, 0), HV_E_NO_MEMSLOT);
    expect("HOST_OP merge with address2 outside", host_op_raw(HV_HOST_MERGE, 0, r, 0x200000), HV_E_NO_MEMSLOT);
    static struct hv_stamp st[2];
    st[0] = (struct hv_stamp){r, 0, 0};
    expect("VERIFY with count above HV_VERIFY_MAX", verify(st, HV_VERIFY_MAX + 1ull, 0, NULL), HV_E_BAD_ARG);
    expect("VERIFY with count 2^63", verify(st, 1ull << 63, 0, NULL), HV_E_BAD_ARG);
    {
        struct hv_call_verify c = {.hdr = {HV_CALL_VERIFY, sizeof(c)}, .table = ram - 8, .count = 1};
        expect("VERIFY with a table past the end of RAM", hv_call(&c.hdr), HV_E_FAULT);
    }
    st[0] = (struct hv_stamp){0x200000, 1, 0};
    expect("VERIFY of a stamp outside the region", verify(st, 1, 0, NULL), HV_E_BAD_ARG);
    st[0] = (struct hv_stamp){r + 4, 1, 0};
    expect("VERIFY of a misaligned stamp", verify(st, 1, 0, NULL), HV_E_BAD_ARG);
    struct hv_call_header unknown = {HV_CALL_NCALLS, sizeof(unknown)};
    expect("call number HV_CALL_NCALLS", hv_call(&unknown), HV_E_UNKNOWN_CALL);
}

static void semantics(const struct hv_shadow_info *sh)
{
    volatile uint64_t *a = (volatile uint64_t *)(uintptr_t)(sh->region_base + 8 * PAGE);
    volatile uint64_t *b = (volatile uint64_t *)(uintptr_t)(sh->region_base + 9 * PAGE);
    uint64_t ua = (uint64_t)(uintptr_t)a, ub = (uint64_t)(uintptr_t)b, changed = 0, got = 0;

    expect("write to a fresh page", try_access(a, 1, 0x1111, NULL), HV_OK);
    expect("migrate", rt_host_op(HV_HOST_MIGRATE, ua, 0, &changed), HV_OK);
    expect("migrate changed", changed, 1);
    expect("contents after migrate", *a, 0x1111);
    expect("swap out", rt_host_op(HV_HOST_SWAP, ua, 0, &changed), HV_OK);
    expect("swap out changed", changed, 1);
    expect("contents after swap-in", *a, 0x1111);
    expect("protect", rt_host_op(HV_HOST_PROTECT, ua, 0, &changed), HV_OK);
    expect("read of a protected page", try_access(a, 0, 0, &got), HV_OK);
    expect("value read from a protected page", got, 0x1111);
    expect("write to a protected page", try_access(a, 1, 0x2222, NULL), HV_E_REFUSED);
    expect("unprotect", rt_host_op(HV_HOST_UNPROTECT, ua, 0, &changed), HV_OK);
    expect("write after unprotect", try_access(a, 1, 0x3333, NULL), HV_OK);
    expect("contents after unprotect", *a, 0x3333);
    expect("age", rt_host_op(HV_HOST_AGE, ua, 0, &changed), HV_OK);
    expect("age found the page young", changed, 1);

    /* Merge needs equal contents: make b a copy of a. */
    for (uint64_t i = 0; i < PAGE / 8; i++)
        b[i] = a[i];
    expect("merge of equal pages", rt_host_op(HV_HOST_MERGE, ua, ub, &changed), HV_OK);
    expect("merge changed", changed, 1);
    expect("write to a merged page (copy-on-write)", try_access(b, 1, 0x4444, NULL), HV_OK);
    expect("the other page after copy-on-write", *a, 0x3333);
    expect("the written page after copy-on-write", *b, 0x4444);
    expect("merge of different pages", rt_host_op(HV_HOST_MERGE, ua, ub, &changed), HV_OK);
    expect("merge of different pages changed", changed, 0);

    expect("unmap", rt_host_op(HV_HOST_UNMAP, ua, 0, &changed), HV_OK);
    expect("contents after unmap (discarded)", *a, 0);
    expect("unmap counter of the page", ((volatile uint64_t *)(uintptr_t)sh->unmap_done)[8], 1);
    expect("unmaps begun on the page", ((volatile uint64_t *)(uintptr_t)sh->unmap_started)[8], 1);

    /* The VMM's check agrees with what is in memory and adds the losses the
     * guest reports. (No wrong stamp here: the VMM would print a lost-write
     * line, which in a passing run reads as a VMM error. The unit tests and
     * kvm.shadow.skip-shootdown-detected check that wrong stamps are found.) */
    struct hv_stamp st[2] = {{ub, 0x4444, 0}, {ua + 8, 0, 0}};
    uint64_t lost = 99;
    expect("VERIFY of true stamps", verify(st, 2, 0, &lost), HV_OK);
    expect("VERIFY of true stamps: lost", lost, 0);
    expect("VERIFY of true stamps with 1 loss the guest reports", verify(st, 2, 1, &lost), HV_OK);
    expect("VERIFY of true stamps with 1 loss the guest reports: lost", lost, 1);

    /* Faults outside the region reach guest code as errors. */
    volatile uint64_t *outside = (volatile uint64_t *)(uintptr_t)(sh->region_base + sh->region_size);
    expect("load past the region", try_access(outside, 0, 0, NULL), HV_E_NO_MEMSLOT);
}

int guest_main(const struct guest_boot *boot)
{
    if (boot->vcpu != 0)
        halt_forever();
    const struct hv_shadow_info *sh = boot->shadow;
    if (rt_arg_word(boot->cmdline, "strict")) {
        if (!sh) {
            printf("hypercalls: strict needs --paging shadow\n");
            return 2;
        }
        volatile uint64_t *outside = (volatile uint64_t *)(uintptr_t)(sh->region_base + sh->region_size + PAGE);
        uint32_t s = try_access(outside, 1, 1, NULL);
        printf("hypercalls: strict: the runtime caught the fault with status %u (the VMM did not stop)\n", s);
        return 1;
    }
    yield_checks();
    if (!sh)
        identity_checks();
    else {
        malformed(sh, boot->ram_size);
        semantics(sh);
    }
    if (failures) {
        printf("hypercalls: %u of %u checks failed\n", failures, checks);
        return 1;
    }
    printf("hypercalls: all %u checks passed (%s paging)\n", checks, sh ? "shadow" : "identity");
    return 0;
}
