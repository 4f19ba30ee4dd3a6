#include "fmt.h"

#include <stddef.h>
#include <stdint.h>

struct out {
    rt_putc_fn put;
    void *ctx;
    int count;
};

static void emit(struct out *o, char c)
{
    o->put(c, o->ctx);
    o->count++;
}

static void emit_repeat(struct out *o, char c, int n)
{
    for (; n > 0; n--)
        emit(o, c);
}

struct spec {
    int left;  /* '-' */
    int zero;  /* '0' */
    int alt;   /* '#' */
    int width;
};

static void emit_string(struct out *o, const struct spec *sp, const char *s)
{
    int len = 0;
    while (s[len])
        len++;
    if (!sp->left)
        emit_repeat(o, ' ', sp->width - len);
    for (int i = 0; i < len; i++)
        emit(o, s[i]);
    if (sp->left)
        emit_repeat(o, ' ', sp->width - len);
}

static void emit_number(struct out *o, const struct spec *sp, uint64_t v, int negative, unsigned base,
                        int upper, const char *prefix)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char buf[24];
    int n = 0;
    do {
        buf[n++] = digits[v % base];
        v /= base;
    } while (v);

    int prefix_len = 0;
    while (prefix[prefix_len])
        prefix_len++;
    int len = n + prefix_len + (negative ? 1 : 0);
    int pad = sp->width > len ? sp->width - len : 0;

    if (!sp->left && !sp->zero)
        emit_repeat(o, ' ', pad);
    if (negative)
        emit(o, '-');
    for (int i = 0; i < prefix_len; i++)
        emit(o, prefix[i]);
    if (!sp->left && sp->zero)
        emit_repeat(o, '0', pad);
    while (n > 0)
        emit(o, buf[--n]);
    if (sp->left)
        emit_repeat(o, ' ', pad);
}

int rt_vformat(rt_putc_fn put, void *ctx, const char *fmt, va_list ap)
{
    struct out o = {put, ctx, 0};

    while (*fmt) {
        if (*fmt != '%') {
            emit(&o, *fmt++);
            continue;
        }
        const char *start = fmt++;
        struct spec sp = {0, 0, 0, 0};

        for (;; fmt++) {
            if (*fmt == '-')
                sp.left = 1;
            else if (*fmt == '0')
                sp.zero = 1;
            else if (*fmt == '#')
                sp.alt = 1;
            else
                break;
        }
        if (*fmt == '*') {
            sp.width = va_arg(ap, int);
            if (sp.width < 0) {
                sp.left = 1;
                sp.width = -sp.width;
            }
            fmt++;
        } else {
            while (*fmt >= '0' && *fmt <= '9') {
                if (sp.width < 10000)
                    sp.width = sp.width * 10 + (*fmt - '0');
                fmt++;
            }
        }
        int longs = 0;  /* 0: int, 1: long, 2: long long, 3: size_t */
        int shorts = 0; /* 1: short, 2: char */
        for (;; fmt++) {
            if (*fmt == 'l')
                longs = longs == 1 ? 2 : 1;
            else if (*fmt == 'z')
                longs = 3;
            else if (*fmt == 'h')
                shorts = shorts ? 2 : 1;
            else
                break;
        }

        switch (*fmt) {
        case 'd':
        case 'i': {
            int64_t v;
            if (longs == 1)
                v = va_arg(ap, long);
            else if (longs == 2)
                v = va_arg(ap, long long);
            else if (longs == 3)
                v = (int64_t)va_arg(ap, size_t);
            else if (shorts == 1)
                v = (short)va_arg(ap, int);
            else if (shorts == 2)
                v = (signed char)va_arg(ap, int);
            else
                v = va_arg(ap, int);
            uint64_t mag = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;
            emit_number(&o, &sp, mag, v < 0, 10, 0, "");
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            uint64_t v;
            if (longs == 1)
                v = va_arg(ap, unsigned long);
            else if (longs == 2)
                v = va_arg(ap, unsigned long long);
            else if (longs == 3)
                v = va_arg(ap, size_t);
            else if (shorts == 1)
                v = (unsigned short)va_arg(ap, unsigned int);
            else if (shorts == 2)
                v = (unsigned char)va_arg(ap, unsigned int);
            else
                v = va_arg(ap, unsigned int);
            if (*fmt == 'u')
                emit_number(&o, &sp, v, 0, 10, 0, "");
            else
                emit_number(&o, &sp, v, 0, 16, *fmt == 'X', sp.alt ? (*fmt == 'X' ? "0X" : "0x") : "");
            break;
        }
        case 'p':
            emit_number(&o, &sp, (uint64_t)(uintptr_t)va_arg(ap, void *), 0, 16, 0, "0x");
            break;
        case 's': {
            const char *s = va_arg(ap, const char *);
            emit_string(&o, &sp, s ? s : "(null)");
            break;
        }
        case 'c': {
            char c[2] = {(char)va_arg(ap, int), 0};
            if (!sp.left)
                emit_repeat(&o, ' ', sp.width - 1);
            emit(&o, c[0]);
            if (sp.left)
                emit_repeat(&o, ' ', sp.width - 1);
            break;
        }
        case '%':
            emit(&o, '%');
            break;
        default:
            /* Unknown conversion (or the string ended): copy it through. */
            while (start < fmt)
                emit(&o, *start++);
            if (*fmt)
                emit(&o, *fmt);
            else
                return o.count;
            break;
        }
        fmt++;
    }
    return o.count;
}

struct sbuf {
    char *buf;
    size_t size;
    size_t len;
};

static void sbuf_putc(char c, void *ctx)
{
    struct sbuf *b = ctx;
    if (b->len + 1 < b->size)
        b->buf[b->len] = c;
    b->len++;
}

int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap)
{
    struct sbuf b = {buf, size, 0};
    int n = rt_vformat(sbuf_putc, &b, fmt, ap);
    if (size)
        buf[b.len < size ? b.len : size - 1] = 0;
    return n;
}

int snprintf(char *buf, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

int printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vprintf(fmt, ap);
    va_end(ap);
    return n;
}
