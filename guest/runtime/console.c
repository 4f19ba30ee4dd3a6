/* Serial console: a polled 16550 at HV_SERIAL_PORT, and printf on top. */
#include "fmt.h"
#include "rt.h"

#define UART_THR 0 /* transmit holding register */
#define UART_LSR 5 /* line status register */
#define UART_LSR_THRE 0x20
#define UART_SPIN_LIMIT 100000

static rt_spinlock console_lock;

static void serial_raw_putc(char c)
{
    for (int i = 0; i < UART_SPIN_LIMIT && !(inb(HV_SERIAL_PORT + UART_LSR) & UART_LSR_THRE); i++)
        cpu_relax();
    outb(HV_SERIAL_PORT + UART_THR, (uint8_t)c);
}

static void serial_putc_cb(char c, void *ctx)
{
    (void)ctx;
    serial_raw_putc(c);
}

int putchar(int c)
{
    rt_spin_lock(&console_lock);
    serial_raw_putc((char)c);
    rt_spin_unlock(&console_lock);
    return (unsigned char)c;
}

int puts(const char *s)
{
    rt_spin_lock(&console_lock);
    while (*s)
        serial_raw_putc(*s++);
    serial_raw_putc('\n');
    rt_spin_unlock(&console_lock);
    return 0;
}

int vprintf(const char *fmt, va_list ap)
{
    rt_spin_lock(&console_lock);
    int n = rt_vformat(serial_putc_cb, NULL, fmt, ap);
    rt_spin_unlock(&console_lock);
    return n;
}
