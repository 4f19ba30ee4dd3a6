/* The local APIC in xAPIC or x2APIC mode (apic.h). */
#include "apic.h"

#include "idt.h"
#include "percpu.h"
#include "time.h"

#define X2APIC_MSR(reg) (0x800u + ((reg) >> 4))

static uintptr_t mmio_base = APIC_DEFAULT_BASE;

bool apic_has_x2apic(void) { return cpuid(1, 0).c & CPUID_1_ECX_X2APIC; }
bool apic_is_x2apic(void) { return this_cpu()->x2apic; }
uintptr_t apic_mmio_base(void) { return mmio_base; }

void apic_enable(void)
{
    uint64_t base = rdmsr(MSR_APIC_BASE);
    if (!(base & APIC_BASE_ENABLE))
        wrmsr(MSR_APIC_BASE, base | APIC_BASE_ENABLE);
    mmio_base = (uintptr_t)(base & 0xfffff000u);
    this_cpu()->x2apic = (base & (APIC_BASE_ENABLE | APIC_BASE_X2APIC)) == (APIC_BASE_ENABLE | APIC_BASE_X2APIC);
    apic_write(APIC_TPR, 0);
    apic_write(APIC_SVR, APIC_SVR_ENABLE | SPURIOUS_VECTOR);
    this_cpu()->apic_id = apic_id();
}

bool apic_enable_x2apic(void)
{
    if (!apic_has_x2apic())
        return false;
    /* xAPIC -> x2APIC is the one legal direct transition (enabled first). */
    uint64_t base = rdmsr(MSR_APIC_BASE);
    if (!(base & APIC_BASE_ENABLE))
        wrmsr(MSR_APIC_BASE, base |= APIC_BASE_ENABLE);
    wrmsr(MSR_APIC_BASE, base | APIC_BASE_X2APIC);
    this_cpu()->x2apic = true;
    apic_write(APIC_SVR, APIC_SVR_ENABLE | SPURIOUS_VECTOR);
    this_cpu()->apic_id = apic_id();
    return true;
}

uint32_t apic_read(uint32_t reg)
{
    if (this_cpu()->x2apic)
        return (uint32_t)rdmsr(X2APIC_MSR(reg));
    return mmio_read32(mmio_base + reg);
}

void apic_write(uint32_t reg, uint32_t value)
{
    if (this_cpu()->x2apic)
        wrmsr(X2APIC_MSR(reg), value);
    else
        mmio_write32(mmio_base + reg, value);
}

uint32_t apic_id(void)
{
    uint32_t id = apic_read(APIC_ID);
    return this_cpu()->x2apic ? id : id >> 24;
}

void apic_eoi(void) { apic_write(APIC_EOI, 0); }

bool apic_isr_bit(uint8_t vector) { return apic_read(APIC_ISR + 0x10u * (vector / 32)) & (1u << (vector % 32)); }
bool apic_irr_bit(uint8_t vector) { return apic_read(APIC_IRR + 0x10u * (vector / 32)) & (1u << (vector % 32)); }

bool apic_icr_send(uint32_t dest, uint32_t low, uint64_t timeout_us)
{
    uint64_t flags = irq_save(); /* ICR2 then ICR must not be split by a handler's IPI */
    bool ok = true;
    if (this_cpu()->x2apic) {
        /* One 64-bit MSR, no delivery status to wait for. */
        wrmsr(X2APIC_MSR(APIC_ICR), (uint64_t)dest << 32 | low);
    } else {
        mmio_write32(mmio_base + APIC_ICR2, dest << 24);
        mmio_write32(mmio_base + APIC_ICR, low);
        uint64_t deadline = tsc_deadline_us(timeout_us);
        while (mmio_read32(mmio_base + APIC_ICR) & APIC_ICR_BUSY) {
            if (rdtsc() > deadline) {
                ok = false;
                break;
            }
            cpu_relax();
        }
    }
    irq_restore(flags);
    return ok;
}

void apic_self_ipi(uint8_t vector) { apic_icr_send(0, APIC_DEST_SELF | APIC_DM_FIXED | vector, 10000); }

void apic_timer_start(uint8_t vector, uint32_t mode, uint32_t initial_count)
{
    apic_write(APIC_TIMER_DIVIDE, APIC_DIVIDE_1);
    apic_write(APIC_LVT_TIMER, vector | mode);
    if (mode != APIC_TIMER_TSC_DEADLINE)
        apic_write(APIC_TIMER_INITIAL, initial_count);
}

void apic_timer_stop(void)
{
    apic_write(APIC_LVT_TIMER, APIC_LVT_MASKED);
    apic_write(APIC_TIMER_INITIAL, 0);
}

struct apic_timer_sample apic_timer_sample(unsigned tries)
{
    struct apic_timer_sample best = {0, 0, UINT64_MAX};
    for (unsigned i = 0; i < tries; i++) {
        uint64_t a = rdtsc();
        uint32_t count = apic_read(APIC_TIMER_CURRENT);
        uint64_t b = rdtsc();
        if (b - a < best.width)
            best = (struct apic_timer_sample){count, a + (b - a) / 2, b - a};
    }
    return best;
}

uint64_t apic_timer_hz(void)
{
    apic_write(APIC_TIMER_DIVIDE, APIC_DIVIDE_1);
    apic_write(APIC_LVT_TIMER, APIC_LVT_MASKED);
    apic_write(APIC_TIMER_INITIAL, 0xffffffffu);
    struct apic_timer_sample start = apic_timer_sample(4);
    udelay(10000);
    struct apic_timer_sample end = apic_timer_sample(4);
    apic_write(APIC_TIMER_INITIAL, 0);
    uint64_t ticks = end.tsc - start.tsc;
    return ticks ? (uint64_t)(start.count - end.count) * tsc_hz() / ticks : 0;
}
