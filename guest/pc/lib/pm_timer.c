/* The ACPI PM timer (pm_timer.h). */
#include "pm_timer.h"

#include "acpi.h"

static uint16_t port;
static unsigned bits;

bool pm_timer_init(void)
{
    if (!acpi_pm_timer_port(&port, &bits))
        port = 0;
    return port != 0;
}

bool pm_timer_present(void) { return port != 0; }
uint16_t pm_timer_port(void) { return port; }
unsigned pm_timer_bits(void) { return bits; }
uint32_t pm_timer_read(void) { return inl(port); }

uint32_t pm_timer_delta(uint32_t start, uint32_t end)
{
    uint32_t mask = bits == 32 ? 0xffffffffu : (1u << bits) - 1;
    return (end - start) & mask;
}

uint64_t pm_timer_ticks_to_us(uint64_t ticks) { return ticks * 1000000u / PM_TIMER_HZ; }
