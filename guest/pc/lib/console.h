/*
 * console.h: the serial console (COM1, a polled 16550) and printf on top of
 * guest/runtime/fmt.c. Safe to use from several CPUs at once (one lock per
 * call) and from an exception handler that interrupted a printing CPU.
 */
#ifndef PC_CONSOLE_H
#define PC_CONSOLE_H

#include <stdarg.h>

#include "cpu.h"

#define COM1_PORT 0x3f8u
#define COM1_ISA_IRQ 4u
/* 16550 registers (offsets from the base port). */
#define UART_DATA 0 /* THR on write, RBR on read (DLAB = 0) */
#define UART_IER 1
#define UART_IIR 2 /* FCR on write */
#define UART_LCR 3
#define UART_MCR 4
#define UART_LSR 5
#define UART_IER_THRI 0x02 /* interrupt when the transmit holding register is empty */
#define UART_MCR_OUT2 0x08 /* on a PC, gates the UART's interrupt to the PIC/IOAPIC */
#define UART_LSR_THRE 0x20

void console_init(void);
int printf(const char *fmt, ...) PC_PRINTF(1, 2);
int vprintf(const char *fmt, va_list ap);
int snprintf(char *buf, size_t size, const char *fmt, ...) PC_PRINTF(3, 4);
int vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);

#endif
