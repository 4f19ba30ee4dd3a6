/*
 * pc.h: everything a PC test kernel uses. A test image defines
 *     const char pc_test_name[] = "NAME";
 *     void test_main(void);
 * test_main runs on the BSP after the start-up (console, IDT, PICs masked,
 * local APIC enabled, TSC calibrated) and makes its checks with report*();
 * the summary and the exit through port 0xf4 follow when it returns.
 */
#ifndef PC_PC_H
#define PC_PC_H

#include "acpi.h"
#include "apic.h"
#include "boot.h"
#include "console.h"
#include "cpu.h"
#include "fwcfg.h"
#include "idt.h"
#include "ioapic.h"
#include "layout.h"
#include "rt_string.h"
#include "madt.h"
#include "percpu.h"
#include "pic.h"
#include "pm_timer.h"
#include "report.h"
#include "smp.h"
#include "time.h"

void test_main(void);

/* The expect-cpus= value, or 0 when the command line has none. */
unsigned expected_cpus(void);
/* The hypervisor's CPUID signature ("TCGTCGTCGTCG", "KVMKVMKVM"), or
 * "bare metal" — SKIP lines say where a feature was missing. */
const char *hypervisor_name(void);

#endif
