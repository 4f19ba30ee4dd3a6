/* CPU exceptions: report every one to the VMM; resume at an armed trap. */
#include "internal.h"

_Static_assert(offsetof(struct rt_trap, rbx) == RT_TRAP_RBX, "RT_TRAP_RBX");
_Static_assert(offsetof(struct rt_trap, rbp) == RT_TRAP_RBP, "RT_TRAP_RBP");
_Static_assert(offsetof(struct rt_trap, r12) == RT_TRAP_R12, "RT_TRAP_R12");
_Static_assert(offsetof(struct rt_trap, r13) == RT_TRAP_R13, "RT_TRAP_R13");
_Static_assert(offsetof(struct rt_trap, r14) == RT_TRAP_R14, "RT_TRAP_R14");
_Static_assert(offsetof(struct rt_trap, r15) == RT_TRAP_R15, "RT_TRAP_R15");
_Static_assert(offsetof(struct rt_trap, rsp) == RT_TRAP_RSP, "RT_TRAP_RSP");
_Static_assert(offsetof(struct rt_trap, rip) == RT_TRAP_RIP, "RT_TRAP_RIP");
_Static_assert(offsetof(struct rt_trap, prev) == RT_TRAP_PREV, "RT_TRAP_PREV");
_Static_assert(offsetof(struct rt_trap, vectors) == RT_TRAP_VECTORS, "RT_TRAP_VECTORS");
_Static_assert(sizeof(struct rt_frame) == (HV_NGPRS + 7) * 8, "exception frame layout");
_Static_assert(sizeof(struct hv_call_exception) <= RT_BOUNCE_SIZE, "bounce buffer too small");

void rt_try_end(struct rt_trap *t)
{
    struct rt_cpu *cpu = rt_this_cpu();
    if (cpu->trap == t)
        cpu->trap = t->prev;
}

void rt_exception(struct rt_frame *f)
{
    uint32_t fault_status = HV_OK;
    if (rt_shadow && f->vector == 2) {
        rt_shootdown_nmi();
        return;
    }
    if (rt_shadow && f->vector == 14) {
        fault_status = rt_shadow_page_fault(f);
        if (fault_status == HV_OK)
            return; /* iretq retries the access */
    }

    struct rt_cpu *cpu = rt_this_cpu();
    struct hv_call_exception r;
    memset(&r, 0, sizeof(r));
    r.hdr.nr = HV_CALL_EXCEPTION;
    r.hdr.size = sizeof(r);
    r.vector = f->vector;
    r.error_code = f->error_code;
    r.rip = f->rip;
    r.cs = f->cs;
    r.rflags = f->rflags;
    r.rsp = f->rsp;
    r.ss = f->ss;
    r.cr2 = read_cr2();
    memcpy(r.gprs, f->gprs, sizeof(r.gprs));

    struct rt_trap *t = cpu->trap;
    int recover = t && f->vector < 32 && (t->vectors >> f->vector & 1);
    if (recover)
        r.flags = HV_EXC_RECOVERABLE;

    uint32_t status = hv_call(&r.hdr);
    if (!recover)
        halt_forever(); /* the VMM stops the VM; never resume the fault */

    /* Disarm, hand the report over, and "return 1 from rt_try()". */
    cpu->trap = t->prev;
    t->exc = r;
    t->status = status;
    t->fault_status = fault_status;
    f->gprs[HV_RAX] = 1;
    f->gprs[HV_RBX] = t->rbx;
    f->gprs[HV_RBP] = t->rbp;
    f->gprs[HV_R12] = t->r12;
    f->gprs[HV_R13] = t->r13;
    f->gprs[HV_R14] = t->r14;
    f->gprs[HV_R15] = t->r15;
    f->rsp = t->rsp;
    f->rip = t->rip;
}
