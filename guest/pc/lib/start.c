/*
 * pc_start: the C entry of the BSP (entry.S), and the per-CPU set-up.
 * Every test image defines test_main(); its checks end in report_summary(),
 * which is also called here if test_main returns.
 */
#include "apic.h"
#include "boot.h"
#include "console.h"
#include "idt.h"
#include "percpu.h"
#include "pic.h"
#include "report.h"
#include "time.h"

struct pc_cpu pc_cpus[PC_MAX_CPUS];

void percpu_init(uint32_t index)
{
    struct pc_cpu *c = &pc_cpus[index];
    c->self = c;
    c->index = index;
    c->fixup_rip = 0;
    c->fault_vector = PC_NO_FAULT;
    wrmsr(MSR_GS_BASE, (uint64_t)(uintptr_t)c);
}

void test_main(void);
void pc_start(uint32_t magic, uint32_t info_addr); /* entry.S */

void pc_start(uint32_t magic, uint32_t info_addr)
{
    percpu_init(0);
    console_init();
    /* Before anything reuses low memory or the RAM after the image. */
    boot_read_multiboot(magic, info_addr);
    idt_init();
    /* The firmware may have left the 8259s unmasked with vectors that
     * overlap the exceptions (SeaBIOS: IRQ 0 -> vector 8). */
    pic_mask_all();
    apic_enable();
    pc_cpus[0].online = true;
    printf("%s: command line '%s'\n", pc_test_name, boot.cmdline);
    if (time_init())
        report_info("TSC %llu kHz (calibrated against PIT channel 2)", (unsigned long long)(tsc_hz() / 1000u));
    else
        report_fail("TSC calibration: PIT channel 2's counter did not move (delays and timings are guesses)");
    test_main();
    report_summary();
}
