/*
 * ioapic: the I/O APIC routes ISA interrupts as programmed. After checking
 * its ID against the MADT, its version and size, COM1's IRQ 4 (at the pin
 * the MADT's overrides give, identity otherwise) is routed to one CPU
 * (target=INDEX, default the last one) and raised with the 16550's
 * transmitter-empty interrupt: the handler must run there, once. A masked
 * entry must deliver nothing; unmasked again, routing works again. Then
 * the PIT's IRQ 0 (usually on pin 2) goes to the BSP at ~1 kHz for 100 ms.
 */
#include "pc.h"

const char pc_test_name[] = "ioapic";

#define COM1_VECTOR 0x41
#define PIT_VECTOR 0x42
#define PIT_CH0_DATA 0x40
#define PIT_COMMAND 0x43
#define PIT_1KHZ_COUNT 1193 /* 1193182 Hz / 1193 = 1000.2 Hz */
#define PIT_WINDOW_US 100000u

static volatile uint32_t com1_count, com1_cpu, com1_apic_id, pit_count;

static void com1_handler(struct pc_regs *regs)
{
    (void)regs;
    com1_cpu = this_cpu()->index;
    com1_apic_id = this_cpu()->apic_id;
    atomic_inc(&com1_count);
    inb(COM1_PORT + UART_IIR);        /* reading IIR acknowledges THRE */
    outb(COM1_PORT + UART_IER, 0);    /* and no new one: the line drops */
    apic_eoi();
}

static void pit_handler(struct pc_regs *regs)
{
    (void)regs;
    atomic_inc(&pit_count);
    apic_eoi();
}

/* The line goes from low to high: an edge for the IOAPIC. */
static void raise_thre_interrupt(void)
{
    outb(COM1_PORT + UART_IER, 0);
    while (!(inb(COM1_PORT + UART_LSR) & UART_LSR_THRE)) /* our own output drains first */
        cpu_relax();
    outb(COM1_PORT + UART_MCR, inb(COM1_PORT + UART_MCR) | UART_MCR_OUT2);
    outb(COM1_PORT + UART_IER, UART_IER_THRI);
}

/* Spins with interrupts on for `us` microseconds or until *counter >= target. */
static uint32_t wait_count(volatile uint32_t *counter, uint32_t target, uint64_t us)
{
    uint64_t end = tsc_deadline_us(us);
    irq_enable();
    while (atomic_load(counter) < target && rdtsc() < end)
        cpu_relax();
    irq_disable();
    return atomic_load(counter);
}

/* One interrupt (waiting up to a second: a starved host delivers late),
 * then 20 ms more for a duplicate that must not come. */
static uint32_t wait_for_one(volatile uint32_t *counter)
{
    if (!wait_count(counter, 1, 1000000u))
        return 0;
    return wait_count(counter, 2, 20000u);
}

static uint32_t redirection_flags(uint16_t madt_flags)
{
    /* MPS INTI flags: polarity bits 1:0 (3 = active low), trigger 3:2 (3 = level); 0 = ISA default */
    return ((madt_flags & 3) == 3 ? IOAPIC_ACTIVE_LOW : 0) | (((madt_flags >> 2) & 3) == 3 ? IOAPIC_LEVEL : 0);
}

static void check_com1(uintptr_t base, uint32_t pin, uint32_t flags, unsigned target)
{
    uint32_t dest = pc_cpus[target].apic_id;
    irq_set_handler(COM1_VECTOR, com1_handler);
    uint64_t entry = ioapic_entry(COM1_VECTOR, flags, dest);
    ioapic_redir_write(base, pin, entry);
    report_eq_hex("redirection entry reads back", entry, ioapic_redir_read(base, pin) & ~(uint64_t)0x5000);

    com1_count = 0;
    com1_cpu = com1_apic_id = 0xffffffffu;
    raise_thre_interrupt();
    uint32_t n = wait_for_one(&com1_count);
    report(n == 1 && com1_cpu == target && com1_apic_id == dest,
           "COM1 IRQ 4 -> pin %u -> CPU %u (APIC ID %u): handled %u times, on CPU %d (APIC ID %d)", pin, target, dest, n,
           (int)com1_cpu, (int)com1_apic_id);

    ioapic_redir_write(base, pin, entry | IOAPIC_MASKED);
    com1_count = 0;
    raise_thre_interrupt();
    n = wait_count(&com1_count, 1, 20000);
    report(n == 0, "masked pin %u: no interrupt within 20 ms of the UART raising IRQ 4 (%u)", pin, n);
    inb(COM1_PORT + UART_IIR);
    outb(COM1_PORT + UART_IER, 0); /* the line low again before unmasking */

    ioapic_redir_write(base, pin, entry);
    n = wait_count(&com1_count, 1, 10000);
    if (n)
        report_info("unmasking pin %u delivered the edge that arrived while it was masked", pin);
    com1_count = 0;
    com1_cpu = 0xffffffffu;
    raise_thre_interrupt();
    n = wait_for_one(&com1_count);
    report(n == 1 && com1_cpu == target, "unmasked pin %u: routing to CPU %u works again (%u times, on CPU %d)", pin,
           target, n, (int)com1_cpu);
    ioapic_redir_write(base, pin, entry | IOAPIC_MASKED);
    outb(COM1_PORT + UART_IER, 0);
}

static void check_pit(void)
{
    uint16_t madt_flags;
    uint32_t gsi = madt_isa_gsi(0, &madt_flags);
    const struct madt_ioapic *io = madt_ioapic_for_gsi(gsi);
    if (!report(io != NULL, "PIT IRQ 0 -> GSI %u is on an I/O APIC", gsi))
        return;
    uintptr_t base = io->address;
    uint32_t pin = gsi - io->gsi_base;
    irq_set_handler(PIT_VECTOR, pit_handler);
    ioapic_redir_write(base, pin, ioapic_entry(PIT_VECTOR, redirection_flags(madt_flags), apic_id()));
    /* Mode 2 (rate generator): OUT drops for one PIT clock per period, so
     * one rising edge per period whatever the IOAPIC does with falling ones
     * (QEMU 7.2's delivers an interrupt on both edges of a mode 3 square wave). */
    outb(PIT_COMMAND, 0x34); /* channel 0, low then high byte, mode 2 */
    outb(PIT_CH0_DATA, PIT_1KHZ_COUNT & 0xff);
    outb(PIT_CH0_DATA, PIT_1KHZ_COUNT >> 8);
    wait_count(&pit_count, 1, 1000000u); /* the first tick starts the window */
    uint32_t start = pit_count, max_count = 0;
    uint64_t t0 = rdtsc(), min_end = t0 + us_to_tsc(PIT_WINDOW_US), max_end = t0 + us_to_tsc(10u * PIT_WINDOW_US);
    /* At least PIT_WINDOW_US, longer (up to 10 times) until 3 ticks came. */
    for (uint64_t now = t0; now < max_end && (now < min_end || pit_count - start < 3); now = rdtsc()) {
        /* The counter itself: it must reload with 1193 (1 kHz), not more. */
        outb(PIT_COMMAND, 0x00); /* latch channel 0 */
        uint32_t c = inb(PIT_CH0_DATA);
        c |= (uint32_t)inb(PIT_CH0_DATA) << 8;
        max_count = c > max_count ? c : max_count;
        wait_count(&pit_count, UINT32_MAX, 1000);
    }
    uint32_t ticks = pit_count - start;
    uint64_t us = tsc_to_us(rdtsc() - t0);
    ioapic_redir_write(base, pin, IOAPIC_MASKED);
    outb(PIT_COMMAND, 0x30); /* mode 0 without a count: channel 0 stops */
    /* The rate is the counter's: a PIT left at the BIOS's 18.2 Hz reads up
     * to 65535. Interrupts coalesce when the host stalls the emulated PIT
     * (QEMU TCG at load 25 on 2 cores: 1 in 128 ms), so they must only
     * keep coming, and never faster than the counter allows. */
    report(max_count > 0 && max_count <= PIT_1KHZ_COUNT, "PIT channel 0 counts down from %u (largest count read %u)",
           PIT_1KHZ_COUNT, max_count);
    uint64_t expect = us / 1000u;
    report(ticks >= 3 && ticks * 10u <= expect * 12u + 10u,
           "PIT IRQ 0 -> pin %u -> BSP at ~1 kHz: %u ticks in %llu us (at least 3, at most 120%% of %llu)", pin, ticks,
           (unsigned long long)us, (unsigned long long)expect);
}

void test_main(void)
{
    const struct madt_info *m = madt();
    if (!report(m->found && m->ioapics >= 1, "MADT lists an I/O APIC"))
        return;
    uint16_t madt_flags;
    uint32_t gsi = madt_isa_gsi(COM1_ISA_IRQ, &madt_flags);
    const struct madt_ioapic *io = madt_ioapic_for_gsi(gsi);
    if (!report(io != NULL, "COM1 IRQ 4 -> GSI %u is on an I/O APIC", gsi))
        return;
    uintptr_t base = io->address;
    uint32_t id = (ioapic_read(base, IOAPIC_REG_ID) >> 24) & 0xf, version = ioapic_read(base, IOAPIC_REG_VERSION);
    report_eq("I/O APIC ID register vs MADT", io->id, id);
    report((version & 0xff) >= 0x11 && (version & 0xff) <= 0x20 && ioapic_entries(base) >= 24,
           "I/O APIC version 0x%x (0x11..0x20) with %u redirection entries (at least 24)", version & 0xff,
           ioapic_entries(base));

    unsigned cpus = smp_boot(SMP_EACH, false);
    uint64_t target = cpus - 1;
    if (arg_u64("target", &target) && target >= cpus) {
        report_fail("target=%llu, but only %u CPUs are online", (unsigned long long)target, cpus);
        target = cpus - 1;
    }
    report_info("%u CPUs online; routing COM1 to CPU %llu", cpus, (unsigned long long)target);
    check_com1(base, gsi - io->gsi_base, redirection_flags(madt_flags), (unsigned)target);
    check_pit();
}
