/* The string functions of string.c, shared by the 64-bit runtime (rt.h) and
 * the PC test kernels (pc/lib). Freestanding: no libc behind them. */
#ifndef GUEST_RT_STRING_H
#define GUEST_RT_STRING_H

#include <stddef.h>

void *memset(void *dst, int c, size_t n);
void *memcpy(void *restrict dst, const void *restrict src, size_t n);
void *memmove(void *dst, const void *src, size_t n);
int memcmp(const void *a, const void *b, size_t n);
size_t strlen(const char *s);
int strcmp(const char *a, const char *b);
int strncmp(const char *a, const char *b, size_t n);
char *strstr(const char *haystack, const char *needle);

#endif
