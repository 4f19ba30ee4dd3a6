/*
 * printf-style formatting, independent of the rest of the runtime (so it can
 * be unit-tested on the host).
 *
 * Conversions: %d %i %u %x %X %p %s %c %%, length modifiers hh h l ll z,
 * flags '-' (left-justify), '0' (zero-pad numbers), '#' (0x prefix for %x),
 * a field width (digits or '*'). %p prints "0x" and the address in hex.
 * Anything else is copied through unchanged.
 */
#ifndef GUEST_RT_FMT_H
#define GUEST_RT_FMT_H

#include <stdarg.h>
#include <stddef.h>

typedef void (*rt_putc_fn)(char c, void *ctx);

/* Formats `fmt` to `put` one character at a time; returns the count. */
int rt_vformat(rt_putc_fn put, void *ctx, const char *fmt, va_list ap);

/* C's snprintf/vsnprintf on top of it (the guest runtimes declare these
 * with their format-checking attributes): at most size - 1 characters and a
 * NUL; returns the length the whole output would have. */
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...);

/* printf through the runtime's own vprintf (its console). */
int vprintf(const char *fmt, va_list ap);
int printf(const char *fmt, ...);

#endif
