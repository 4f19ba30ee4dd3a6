/* TSC calibration against PIT channel 2, and delays. */
#include "time.h"

#define PIT_CH2_DATA 0x42
#define PIT_COMMAND 0x43
#define PORT_B 0x61 /* bit 0: channel 2 gate, bit 1: speaker, bit 5: channel 2 output */
#define PORT_B_GATE2 0x01
#define PORT_B_SPEAKER 0x02

#define SPAN_US 35000u
#define SAMPLE_TRIES 8u
#define CLEAN_ROUNDS 3
#define MAX_ROUNDS 8

/* Until calibrated: a rate high enough that delays err long, not short. */
static uint64_t hz = 5000000000ull;

static bool calibrated;

uint64_t tsc_hz(void) { return hz; }
bool time_calibrated(void) { return calibrated; }
/* a * b / c with a 128-bit intermediate (MUL, DIV: no libgcc here);
 * saturates instead of raising #DE when the quotient does not fit. */
static uint64_t muldiv(uint64_t a, uint64_t b, uint64_t c)
{
    uint64_t lo, hi, q, r;
    __asm__("mulq %3" : "=a"(lo), "=d"(hi) : "a"(a), "rm"(b));
    if (hi >= c)
        return UINT64_MAX;
    __asm__("divq %4" : "=a"(q), "=d"(r) : "a"(lo), "d"(hi), "rm"(c));
    (void)r;
    return q;
}

uint64_t tsc_to_us(uint64_t ticks) { return muldiv(ticks, 1000000u, hz); }
uint64_t us_to_tsc(uint64_t us) { return muldiv(us, hz, 1000000u); }
uint64_t tsc_deadline_us(uint64_t us) { return rdtsc() + us_to_tsc(us); }

void udelay(uint64_t us)
{
    uint64_t end = tsc_deadline_us(us);
    while (rdtsc() < end)
        cpu_relax();
}

void mdelay(uint64_t ms) { udelay(ms * 1000u); }

/* A reading of channel 2's counter: the latch command is bracketed by two
 * TSC reads, and the reading is placed at their midpoint. Of `tries`
 * readings the one with the narrowest bracket is kept: under TCG on a busy
 * host a single port access can take milliseconds. */
struct pit_sample {
    uint16_t count;
    uint64_t tsc, width;
};

static struct pit_sample pit_sample(unsigned tries)
{
    struct pit_sample best = {0, 0, UINT64_MAX};
    for (unsigned i = 0; i < tries; i++) {
        uint64_t a = rdtsc();
        outb(PIT_COMMAND, 0x80); /* latch channel 2's count */
        uint64_t b = rdtsc();
        uint16_t count = inb(PIT_CH2_DATA);
        count |= (uint16_t)(inb(PIT_CH2_DATA) << 8);
        if (b - a < best.width)
            best = (struct pit_sample){count, a + (b - a) / 2, b - a};
    }
    return best;
}

/* One measurement: channel 2 counts down from 0xffff in mode 0 (gate high:
 * real 8254s pause mode 0 while it is low) for about 35 ms, read at both
 * ends. Returns TSC ticks per second, 0 when the counter did not move; the
 * clean flag says the two brackets add up to less than 0.1% of the span. */
static uint64_t measure_once(bool *clean)
{
    outb(PORT_B, (inb(PORT_B) & ~PORT_B_SPEAKER) | PORT_B_GATE2);
    outb(PIT_COMMAND, 0xb0); /* channel 2, low byte then high byte, mode 0, binary */
    outb(PIT_CH2_DATA, 0xff);
    outb(PIT_CH2_DATA, 0xff);
    struct pit_sample start = pit_sample(SAMPLE_TRIES);
    uint64_t give_up = start.tsc + 100u * us_to_tsc(SPAN_US); /* a dead PIT must not hang us */
    uint16_t span = (uint16_t)((uint64_t)PIT_HZ * SPAN_US / 1000000u);
    while ((uint16_t)(start.count - pit_sample(1).count) < span)
        if (rdtsc() > give_up)
            return 0;
    struct pit_sample end = pit_sample(SAMPLE_TRIES);
    /* Mode 0 keeps counting down through 0 (mod 2^16); the span plus the
     * sampling stays below the 54.9 ms a full turn takes. */
    uint16_t pit_ticks = (uint16_t)(start.count - end.count);
    uint64_t tsc_ticks = end.tsc - start.tsc;
    *clean = (start.width + end.width) * 1000u < tsc_ticks;
    return pit_ticks ? tsc_ticks * PIT_HZ / pit_ticks : 0;
}

static void sort(uint64_t *v, unsigned n)
{
    for (unsigned i = 1; i < n; i++)
        for (unsigned j = i; j > 0 && v[j - 1] > v[j]; j--) {
            uint64_t t = v[j];
            v[j] = v[j - 1];
            v[j - 1] = t;
        }
}

/* The median of three clean measurements (or of all, if fewer than three
 * of MAX_ROUNDS were clean): one disturbed in a way its brackets do not
 * show is outvoted. */
bool time_init(void)
{
    uint64_t clean_rates[MAX_ROUNDS], all_rates[MAX_ROUNDS];
    unsigned clean = 0, all = 0;
    while (clean < CLEAN_ROUNDS && all < MAX_ROUNDS) {
        bool ok = false;
        uint64_t r = measure_once(&ok);
        if (!r)
            return false;
        all_rates[all++] = r;
        if (ok)
            clean_rates[clean++] = r;
    }
    uint64_t *v = clean >= CLEAN_ROUNDS ? clean_rates : all_rates;
    unsigned n = clean >= CLEAN_ROUNDS ? clean : all;
    sort(v, n);
    hz = v[n / 2];
    calibrated = true;
    return true;
}
