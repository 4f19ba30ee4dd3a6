/* Serial console: COM1 polled, printf through guest/runtime/fmt.c. */
#include "console.h"

#include "fmt.h"
#include "percpu.h"

/* Bounded wait for THRE: a UART that never drains must not hang a test. */
#define THRE_SPIN_LIMIT 100000

/* The lock records its holder so that an exception report from the CPU
 * that holds it (a fault inside printf) prints instead of deadlocking. */
static struct spinlock console_lock;
static volatile uint32_t console_owner = PC_NO_FAULT;

void console_init(void)
{
    outb(COM1_PORT + UART_IER, 0);
    outb(COM1_PORT + UART_LCR, 0x80); /* DLAB: divisor 1 = 115200 baud */
    outb(COM1_PORT + UART_DATA, 1);
    outb(COM1_PORT + UART_IER, 0);
    outb(COM1_PORT + UART_LCR, 0x03); /* 8N1 */
    outb(COM1_PORT + UART_IIR, 0x07); /* FIFOs on and cleared */
    outb(COM1_PORT + UART_MCR, 0x03 | UART_MCR_OUT2); /* DTR, RTS */
}

static void serial_putc(char c, void *ctx)
{
    (void)ctx;
    for (int i = 0; i < THRE_SPIN_LIMIT && !(inb(COM1_PORT + UART_LSR) & UART_LSR_THRE); i++)
        cpu_relax();
    outb(COM1_PORT + UART_DATA, (uint8_t)c);
}

int vprintf(const char *fmt, va_list ap)
{
    uint64_t flags = irq_save();
    uint32_t me = this_cpu()->index;
    int nested = console_owner == me;
    if (!nested) {
        spin_lock(&console_lock);
        console_owner = me;
    }
    int n = rt_vformat(serial_putc, NULL, fmt, ap);
    if (!nested) {
        console_owner = PC_NO_FAULT;
        spin_unlock(&console_lock);
    }
    irq_restore(flags);
    return n;
}
