/*
 * report.h: test results in the kvm-unit-tests style. Each check prints one
 * line, "PASS: what", "FAIL: what" (saying what was expected and what was
 * found) or "SKIP: what (why)"; report_summary() prints
 * "SUMMARY: N tests, F failures, S skipped" and exits through the
 * isa-debug-exit port with 1 if anything failed, else 0.
 */
#ifndef PC_REPORT_H
#define PC_REPORT_H

#include "cpu.h"

#define DEBUG_EXIT_PORT 0xf4u

/* Counts a check; returns `pass`. */
bool report(bool pass, const char *fmt, ...) PC_PRINTF(2, 3);
/* "PASS: what == expected" or "FAIL: what: expected E, found F". */
bool report_eq(const char *what, uint64_t expected, uint64_t found);
/* As report_eq, in hex. */
bool report_eq_hex(const char *what, uint64_t expected, uint64_t found);
void report_skip(const char *fmt, ...) PC_PRINTF(1, 2);
/* A failure found outside a check (a bad command line, an unexpected
 * interrupt): counted like a failed check. */
void report_fail(const char *fmt, ...) PC_PRINTF(1, 2);
/* Informational line, prefixed with the test image's name. */
void report_info(const char *fmt, ...) PC_PRINTF(1, 2);
unsigned report_failures(void);

PC_NORETURN void report_summary(void);
/* Writes `code` to the debug-exit port, then halts (if nothing exits). */
PC_NORETURN void pc_exit(uint32_t code);

/* The image's name for report_info ("apic", "smpboot", ...). */
extern const char pc_test_name[];

#endif
