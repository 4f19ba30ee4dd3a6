/* PASS/FAIL/SKIP lines, the summary, and the exit through port 0xf4. */
#include "report.h"

#include "console.h"

static volatile uint32_t tests, failures, skipped;

static void vreport_line(const char *prefix, const char *fmt, va_list ap, const char *suffix)
{
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    printf("%s%s%s\n", prefix, line, suffix);
}

bool report(bool pass, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    atomic_inc(&tests);
    if (!pass)
        atomic_inc(&failures);
    vreport_line(pass ? "PASS: " : "FAIL: ", fmt, ap, "");
    va_end(ap);
    return pass;
}

bool report_eq(const char *what, uint64_t expected, uint64_t found)
{
    if (expected == found)
        return report(true, "%s == %llu", what, (unsigned long long)found);
    return report(false, "%s: expected %llu, found %llu", what, (unsigned long long)expected,
                  (unsigned long long)found);
}

bool report_eq_hex(const char *what, uint64_t expected, uint64_t found)
{
    if (expected == found)
        return report(true, "%s == 0x%llx", what, (unsigned long long)found);
    return report(false, "%s: expected 0x%llx, found 0x%llx", what, (unsigned long long)expected,
                  (unsigned long long)found);
}

void report_skip(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    atomic_inc(&tests);
    atomic_inc(&skipped);
    vreport_line("SKIP: ", fmt, ap, "");
    va_end(ap);
}

void report_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    atomic_inc(&tests);
    atomic_inc(&failures);
    vreport_line("FAIL: ", fmt, ap, "");
    va_end(ap);
}

void report_info(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    char line[512];
    vsnprintf(line, sizeof line, fmt, ap);
    printf("%s: %s\n", pc_test_name, line);
    va_end(ap);
}

unsigned report_failures(void) { return atomic_load(&failures); }

void report_summary(void)
{
    printf("SUMMARY: %u tests, %u failures, %u skipped\n", atomic_load(&tests), atomic_load(&failures),
           atomic_load(&skipped));
    pc_exit(atomic_load(&failures) ? 1 : 0);
}

void pc_exit(uint32_t code)
{
    outl(DEBUG_EXIT_PORT, code);
    for (;;)
        __asm__ volatile("cli; hlt");
}
