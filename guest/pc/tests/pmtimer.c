/*
 * pmtimer: the ACPI PM timer at the port the FADT names (X_PM_TMR_BLK or
 * PM_TMR_BLK), 24 or 32 bits per TMR_VAL_EXT. Reads never go backwards
 * (modulo the width), a 24-bit timer never shows bits above 23, and it
 * runs at 3.579545 MHz within 1% as measured with the TSC (whose rate
 * comes from PIT channel 2).
 */
#include "pc.h"

const char pc_test_name[] = "pmtimer";

#define READS 20000
#define RATE_WINDOW_US 50000u

static void check_reads(void)
{
    unsigned bits = pm_timer_bits();
    uint32_t half = bits == 32 ? 0x80000000u : 1u << (bits - 1);
    uint32_t first = pm_timer_read(), prev = first, high_bits = 0, backwards = 0, max_step = 0;
    uint64_t total = 0;
    for (unsigned i = 0; i < READS; i++) {
        uint32_t v = pm_timer_read();
        if (bits == 24)
            high_bits |= v & 0xff000000u;
        uint32_t step = pm_timer_delta(prev, v);
        if (step >= half) {
            if (!backwards)
                report_info("read %u: 0x%x after 0x%x", i, v, prev);
            backwards++;
        } else if (step > max_step) {
            max_step = step;
        }
        total += step;
        prev = v;
    }
    report(backwards == 0, "%u reads are monotonic modulo 2^%u: %u went backwards (largest forward step %u ticks)",
           READS, bits, backwards, max_step);
    report(total > 0, "the timer advances: %llu ticks over %u reads, from 0x%x", (unsigned long long)total, READS,
           first);
    if (bits == 24)
        report(high_bits == 0, "24-bit timer: every value < 2^24 (bits seen above bit 23: 0x%x)", high_bits);
    else
        report_skip("values < 2^24: the FADT says the timer is 32 bits wide (TMR_VAL_EXT)");
}

/* PM timer ticks per second over one window of TSC time; each read is
 * bracketed by two TSC reads and placed at their midpoint. */
static uint64_t rate_once(void)
{
    uint64_t t0 = rdtsc();
    uint32_t p0 = pm_timer_read();
    uint64_t t0b = rdtsc();
    uint64_t end = t0 + us_to_tsc(RATE_WINDOW_US);
    while (rdtsc() < end)
        cpu_relax();
    uint64_t t1 = rdtsc();
    uint32_t p1 = pm_timer_read();
    uint64_t t1b = rdtsc();
    uint64_t tsc_ticks = (t1 + t1b) / 2 - (t0 + t0b) / 2;
    return tsc_ticks ? pm_timer_delta(p0, p1) * tsc_hz() / tsc_ticks : 0;
}

static void check_rate(bool tsc_ok)
{
    if (!tsc_ok) {
        report_skip("PM timer rate: the TSC could not be calibrated against the PIT");
        return;
    }
    /* Median of three windows (each far shorter than the 4.7 s after which
     * a 24-bit counter wraps): one preempted read is outvoted. */
    uint64_t r[3];
    for (int i = 0; i < 3; i++)
        r[i] = rate_once();
    uint64_t lo = r[0] < r[1] ? r[0] : r[1], hi = r[0] < r[1] ? r[1] : r[0];
    uint64_t hz = r[2] < lo ? lo : r[2] > hi ? hi : r[2];
    uint64_t low = PM_TIMER_HZ - PM_TIMER_HZ / 100, high = PM_TIMER_HZ + PM_TIMER_HZ / 100;
    report(hz >= low && hz <= high,
           "PM timer rate %llu Hz within 1%% of %u Hz (median of three %u ms windows of TSC time: %llu, %llu, %llu)",
           (unsigned long long)hz, PM_TIMER_HZ, RATE_WINDOW_US / 1000u, (unsigned long long)r[0],
           (unsigned long long)r[1], (unsigned long long)r[2]);
}

void test_main(void)
{
    bool tsc_ok = time_calibrated();
    const struct acpi_header *fadt = acpi_find_table("FACP");
    if (!report(fadt != NULL, "FADT found through the RSDP"))
        return;
    if (!report(pm_timer_init(), "FADT names a PM timer block (X_PM_TMR_BLK in I/O space, or PM_TMR_BLK)"))
        return;
    report_info("PM timer at port 0x%x, %u bits (FADT revision %u, %u bytes, PM_TMR_LEN %u)", pm_timer_port(),
                pm_timer_bits(), fadt->revision, fadt->length, ((const uint8_t *)fadt)[FADT_PM_TMR_LEN]);
    report(((const uint8_t *)fadt)[FADT_PM_TMR_LEN] == 4, "FADT PM_TMR_LEN is 4 (found %u)",
           ((const uint8_t *)fadt)[FADT_PM_TMR_LEN]);
    check_reads();
    check_rate(tsc_ok);
}
