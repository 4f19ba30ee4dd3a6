/* Boot: per-vCPU setup, the IDT, guest_main, exit; and hv_call. */
#include "internal.h"

_Static_assert(offsetof(struct rt_cpu, self) == RT_CPU_SELF, "RT_CPU_SELF");
_Static_assert(offsetof(struct rt_cpu, trap) == RT_CPU_TRAP, "RT_CPU_TRAP");

#define MSR_GS_BASE 0xc0000101u
#define IDT_INTERRUPT_GATE 0x8e /* present, DPL 0, 64-bit interrupt gate */

struct idt_gate {
    uint16_t offset_lo;
    uint16_t selector;
    uint8_t ist;
    uint8_t type_attr;
    uint16_t offset_mid;
    uint32_t offset_hi;
    uint32_t zero;
};
_Static_assert(sizeof(struct idt_gate) == 16, "IDT gate size");


/* Set by vCPU 0 once the IDT and GDT are built. */
static uint32_t rt_boot_ready __attribute__((section(".data"))) = 0;

static _Alignas(16) struct idt_gate rt_idt[32];
static _Alignas(64) struct rt_cpu rt_cpus[RT_MAX_CPUS];

/*
 * A #DF runs on its own stack (IST 1 of a per-vCPU TSS), so a fault that
 * wrecked RSP is still reported with its registers instead of ending in a
 * triple fault, whose state KVM may not keep. The GDT is the VMM's four
 * descriptors (HV_GDT_*) followed by one 16-byte TSS descriptor per vCPU.
 */
#define VEC_DF 8
#define DF_STACK_SIZE 2048
#define GDT_FIRST_TSS 4
struct __attribute__((packed)) tss64 {
    uint32_t reserved0;
    uint64_t rsp[3];
    uint64_t reserved1;
    uint64_t ist[7];
    uint64_t reserved2;
    uint16_t reserved3;
    uint16_t iomap_base;
};
_Static_assert(sizeof(struct tss64) == 104, "64-bit TSS layout");
static struct tss64 rt_tss[RT_MAX_CPUS];
static _Alignas(16) uint8_t rt_df_stacks[RT_MAX_CPUS][DF_STACK_SIZE];
static _Alignas(16) uint64_t rt_gdt[GDT_FIRST_TSS + 2 * RT_MAX_CPUS];

struct __attribute__((packed)) desc_ptr {
    uint16_t limit;
    uint64_t base;
};

static void gdt_build(void)
{
    struct desc_ptr old;
    __asm__ volatile("sgdt %0" : "=m"(old));
    memcpy(rt_gdt, (const void *)(uintptr_t)old.base, GDT_FIRST_TSS * sizeof(uint64_t));
    for (unsigned i = 0; i < RT_MAX_CPUS; i++) {
        uint64_t base = (uint64_t)(uintptr_t)&rt_tss[i], limit = sizeof(struct tss64) - 1;
        rt_tss[i].ist[0] = (uint64_t)(uintptr_t)(rt_df_stacks[i] + DF_STACK_SIZE);
        rt_tss[i].iomap_base = sizeof(struct tss64); /* no I/O bitmap */
        rt_gdt[GDT_FIRST_TSS + 2 * i] = (limit & 0xffff) | (base & 0xffffff) << 16 | 0x89ull << 40 /* P, 64-bit TSS */ |
                                        ((limit >> 16) & 0xf) << 48 | ((base >> 24) & 0xff) << 56;
        rt_gdt[GDT_FIRST_TSS + 2 * i + 1] = base >> 32;
    }
}

static void gdt_load(uint32_t vcpu)
{
    struct desc_ptr p = {sizeof(rt_gdt) - 1, (uint64_t)(uintptr_t)rt_gdt};
    uint16_t tss = (uint16_t)((GDT_FIRST_TSS + 2 * vcpu) * 8);
    __asm__ volatile("lgdt %0; ltr %1" : : "m"(p), "r"(tss) : "memory");
}

static void idt_build(void)
{
    for (unsigned v = 0; v < RT_ARRAY_SIZE(rt_idt); v++) {
        uint64_t a = rt_exc_stubs[v];
        rt_idt[v] = (struct idt_gate){
            .offset_lo = (uint16_t)a,
            .selector = HV_GDT_CODE64,
            .ist = v == VEC_DF ? 1 : 0,
            .type_attr = IDT_INTERRUPT_GATE,
            .offset_mid = (uint16_t)(a >> 16),
            .offset_hi = (uint32_t)(a >> 32),
            .zero = 0,
        };
    }
}

static void idt_load(void)
{
    struct desc_ptr p = {sizeof(rt_idt) - 1, (uint64_t)(uintptr_t)rt_idt};
    __asm__ volatile("lidt %0" : : "m"(p) : "memory");
}

static void wrmsr(uint32_t msr, uint64_t v)
{
    __asm__ volatile("wrmsr" : : "c"(msr), "a"((uint32_t)v), "d"((uint32_t)(v >> 32)) : "memory");
}

uint32_t rt_cpu_index(void) { return rt_this_cpu()->index; }

/* Called from _start (entry.S) on every vCPU with the boot registers. */
RT_NORETURN void rt_start(uint64_t vcpu, uint64_t ncpus, uint64_t cmdline, uint64_t ram_size, uint64_t shadow);
RT_NORETURN void rt_start(uint64_t vcpu, uint64_t ncpus, uint64_t cmdline, uint64_t ram_size, uint64_t shadow)
{
    if (vcpu == 0) {
        idt_build();
        gdt_build();
        rt_shadow = (const struct hv_shadow_info *)(uintptr_t)shadow;
        __atomic_store_n(&rt_boot_ready, 1, __ATOMIC_SEQ_CST);
    } else {
        while (!__atomic_load_n(&rt_boot_ready, __ATOMIC_ACQUIRE))
            cpu_relax();
    }
    if (vcpu >= RT_MAX_CPUS)
        halt_forever(); /* no per-vCPU state for it; vCPU 0 reports below */

    struct rt_cpu *cpu = &rt_cpus[vcpu];
    cpu->self = cpu;
    cpu->index = (uint32_t)vcpu;
    cpu->trap = NULL;
    wrmsr(MSR_GS_BASE, (uint64_t)(uintptr_t)cpu);
    gdt_load((uint32_t)vcpu);
    idt_load();
    rt_shadow_init_cpu(cpu); /* after the IDT: announces the NMI handler */

    if (vcpu == 0 && ncpus > RT_MAX_CPUS) {
        printf("runtime: %lu vCPUs, but the guest runtime supports at most %u\n", (unsigned long)ncpus,
               RT_MAX_CPUS);
        exit(1);
    }

    struct guest_boot boot = {
        .vcpu = (uint32_t)vcpu,
        .ncpus = (uint32_t)ncpus,
        .cmdline = cmdline ? (const char *)(uintptr_t)cmdline : "",
        .ram_size = ram_size,
        .shadow = rt_shadow,
    };
    exit(guest_main(&boot));
}

RT_NORETURN void halt_forever(void)
{
    for (;;)
        __asm__ volatile("cli; hlt" ::: "memory");
}

RT_NORETURN void exit(int code)
{
    outl(HV_DEBUG_EXIT_PORT, (uint32_t)code);
    halt_forever();
}

uint32_t hv_call(struct hv_call_header *block)
{
    uint64_t addr = (uint64_t)(uintptr_t)block;
    if (addr <= 0xffffffffu)
        return hv_call_raw((uint32_t)addr);

    /* The OUT carries 32 bits: pass a copy from below 4 GiB (the runtime's
     * .bss), then copy back what the VMM may have filled in. A block
     * larger than the buffer is cut short: the VMM then answers
     * HV_E_BAD_SIZE, as no call's block is that large. */
    struct rt_cpu *cpu = rt_this_cpu();
    size_t size = block->size < sizeof(*block) ? sizeof(*block) : block->size;
    if (size > sizeof(cpu->bounce))
        size = sizeof(cpu->bounce);
    memcpy(cpu->bounce, block, size);
    uint32_t status = hv_call_raw((uint32_t)(uintptr_t)cpu->bounce);
    memcpy(block, cpu->bounce, size);
    return status;
}
