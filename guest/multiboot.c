/*
 * multiboot: a multiboot v1 ELF32 kernel (32-bit protected mode, paging off).
 * It checks what the loader handed over: EAX == 0x2BADB002, the info flags
 * (mem, cmdline, mods, mmap), the memory map, and one module whose length
 * and 32-bit FNV-1a match `module-bytes=N` and `module-fnv=0xHEX` on the
 * command line. Exit 0 when everything matches, 1 otherwise.
 *
 * Self-contained: its own entry, stack, serial output and exit (the 64-bit
 * runtime is not built for 32-bit code); port I/O from runtime/x86_io.h.
 */
#include <hv/abi.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "x86_io.h"

#define MB_HEADER_MAGIC 0x1BADB002u
#define MB_HEADER_PAGE_ALIGN (1u << 0) /* modules on 4 KiB boundaries */
#define MB_HEADER_MEMORY_INFO (1u << 1)
#define MB_HEADER_FLAGS (MB_HEADER_PAGE_ALIGN | MB_HEADER_MEMORY_INFO)
#define MB_BOOT_MAGIC 0x2BADB002u

#define MBI_MEM (1u << 0)
#define MBI_CMDLINE (1u << 2)
#define MBI_MODS (1u << 3)
#define MBI_MMAP (1u << 6)

#define STACK_SIZE 0x4000

/* ---- header and entry ------------------------------------------------------- */

__attribute__((section(".multiboot"), used, aligned(4))) static const uint32_t multiboot_header[3] = {
    MB_HEADER_MAGIC,
    MB_HEADER_FLAGS,
    (uint32_t)-(MB_HEADER_MAGIC + MB_HEADER_FLAGS),
};

/* Not static: referenced only from the entry code. */
__attribute__((used)) _Alignas(16) uint8_t boot_stack[STACK_SIZE];

__attribute__((noreturn, used)) void mb_start(uint32_t magic, uint32_t info);

/* Zero .bss (the stack is in it), switch to our own stack and call
 * mb_start(EAX, EBX) (cdecl; ESP 16-byte aligned at the call). */
__asm__(".section .text.entry, \"ax\", @progbits\n"
        ".globl _start\n"
        ".type _start, @function\n"
        "_start:\n"
        "    cli\n"
        "    cld\n"
        "    mov %eax, %esi\n"
        "    mov %ebx, %ebp\n"
        "    mov $__bss_start, %edi\n"
        "    mov $__bss_end, %ecx\n"
        "    sub %edi, %ecx\n"
        "    xor %eax, %eax\n"
        "    rep stosb\n"
        "    mov $boot_stack + " "0x4000" ", %esp\n"
        "    sub $8, %esp\n"
        "    push %ebp\n"
        "    push %esi\n"
        "    xor %ebp, %ebp\n"
        "    call mb_start\n"
        "1:  cli\n"
        "    hlt\n"
        "    jmp 1b\n"
        ".size _start, . - _start\n"
        ".text\n");

_Static_assert(STACK_SIZE == 0x4000, "update the entry code");

/* ---- exit, serial ----------------------------------------------------------- */


static __attribute__((noreturn)) void mb_exit(int code)
{
    outl(HV_DEBUG_EXIT_PORT, (uint32_t)code);
    for (;;)
        __asm__ volatile("cli; hlt");
}

static void serial_putc(char c)
{
    for (int i = 0; i < 100000 && !(inb(HV_SERIAL_PORT + 5) & 0x20); i++)
        __asm__ volatile("pause");
    outb(HV_SERIAL_PORT, (uint8_t)c);
}

static void put_number(uint32_t v, unsigned base, int width, char pad, int negative)
{
    char buf[12];
    int n = 0;
    do {
        buf[n++] = "0123456789abcdef"[v % base];
        v /= base;
    } while (v);
    int len = n + negative;
    if (negative && pad == '0')
        serial_putc('-');
    for (; width > len; width--)
        serial_putc(pad);
    if (negative && pad != '0')
        serial_putc('-');
    while (n)
        serial_putc(buf[--n]);
}

/* %s %c %d %u %x %llx %%, with a width and the '0' flag for numbers.
 * (%llx by halves: no 64-bit division in 32-bit code without libgcc.) */
static void mb_printf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void mb_printf(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    for (; *fmt; fmt++) {
        if (*fmt != '%') {
            serial_putc(*fmt);
            continue;
        }
        fmt++;
        char pad = ' ';
        int width = 0, longs = 0;
        if (*fmt == '0')
            pad = '0', fmt++;
        while (*fmt >= '0' && *fmt <= '9')
            width = width * 10 + (*fmt++ - '0');
        while (*fmt == 'l')
            longs++, fmt++;
        switch (*fmt) {
        case 's': {
            const char *s = va_arg(ap, const char *);
            for (s = s ? s : "(null)"; *s; s++)
                serial_putc(*s);
            break;
        }
        case 'c':
            serial_putc((char)va_arg(ap, int));
            break;
        case 'd': {
            int32_t v = va_arg(ap, int32_t);
            put_number(v < 0 ? 0u - (uint32_t)v : (uint32_t)v, 10, width, pad, v < 0);
            break;
        }
        case 'u':
            put_number(va_arg(ap, uint32_t), 10, width, pad, 0);
            break;
        case 'x':
            if (longs >= 2) {
                uint64_t v = va_arg(ap, uint64_t);
                uint32_t hi = (uint32_t)(v >> 32);
                if (hi) {
                    put_number(hi, 16, width > 8 ? width - 8 : 0, pad, 0);
                    put_number((uint32_t)v, 16, 8, '0', 0);
                } else {
                    put_number((uint32_t)v, 16, width, pad, 0);
                }
            } else {
                put_number(va_arg(ap, uint32_t), 16, width, pad, 0);
            }
            break;
        case '%':
            serial_putc('%');
            break;
        case 0:
            fmt--;
            break;
        default:
            serial_putc('%');
            serial_putc(*fmt);
            break;
        }
    }
    va_end(ap);
}

/* ---- multiboot information --------------------------------------------------- */

struct mb_info {
    uint32_t flags;
    uint32_t mem_lower, mem_upper; /* KiB */
    uint32_t boot_device;
    uint32_t cmdline;
    uint32_t mods_count, mods_addr;
    uint32_t syms[4];
    uint32_t mmap_length, mmap_addr;
};

struct mb_module {
    uint32_t mod_start, mod_end; /* [start, end) */
    uint32_t string;
    uint32_t reserved;
};

struct __attribute__((packed)) mb_mmap_entry {
    uint32_t size; /* of the rest of the entry */
    uint64_t addr, len;
    uint32_t type; /* 1: available */
};

extern char __image_start[], __image_end[];

static int starts_with(const char *s, const char *prefix)
{
    while (*prefix)
        if (*s++ != *prefix++)
            return 0;
    return 1;
}

/* The value of `key` (e.g. "module-bytes=") in a blank-separated command
 * line, or NULL. */
static const char *find_option(const char *cmdline, const char *key)
{
    for (const char *p = cmdline; *p; p++) {
        if ((p == cmdline || p[-1] == ' ' || p[-1] == '\t') && starts_with(p, key)) {
            while (*key)
                key++, p++;
            return p;
        }
    }
    return NULL;
}

static int is_end(char c) { return c == 0 || c == ' ' || c == '\t'; }

static int parse_decimal(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    if (!s || is_end(*s))
        return 0;
    for (; !is_end(*s); s++) {
        if (*s < '0' || *s > '9' || v > (0xffffffffu - 9) / 10)
            return 0;
        v = v * 10 + (uint32_t)(*s - '0');
    }
    *out = v;
    return 1;
}

static int parse_hex(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    int digits = 0;
    if (!s || s[0] != '0' || (s[1] != 'x' && s[1] != 'X'))
        return 0;
    for (s += 2; !is_end(*s); s++, digits++) {
        uint32_t d;
        if (*s >= '0' && *s <= '9')
            d = (uint32_t)(*s - '0');
        else if (*s >= 'a' && *s <= 'f')
            d = (uint32_t)(*s - 'a' + 10);
        else if (*s >= 'A' && *s <= 'F')
            d = (uint32_t)(*s - 'A' + 10);
        else
            return 0;
        if (digits >= 8)
            return 0;
        v = v << 4 | d;
    }
    if (!digits)
        return 0;
    *out = v;
    return 1;
}

static uint32_t fnv1a(const uint8_t *p, uint32_t n)
{
    uint32_t h = 0x811c9dc5u;
    for (uint32_t i = 0; i < n; i++) {
        h ^= p[i];
        h *= 0x01000193u;
    }
    return h;
}

static int overlaps(uint32_t a_start, uint32_t a_end, uint32_t b_start, uint32_t b_end)
{
    return a_start < b_end && b_start < a_end;
}

void mb_start(uint32_t magic, uint32_t info_addr)
{
    int ok = 1;
    if (magic != MB_BOOT_MAGIC) {
        mb_printf("multiboot: EAX is 0x%x, expected 0x%x\n", magic, MB_BOOT_MAGIC);
        mb_exit(1);
    }
    const struct mb_info *mbi = (const struct mb_info *)info_addr;
    mb_printf("multiboot: info at 0x%x, flags 0x%x\n", info_addr, mbi->flags);

    const uint32_t needed[] = {MBI_MEM, MBI_CMDLINE, MBI_MODS, MBI_MMAP};
    const char *const names[] = {"mem (bit 0)", "cmdline (bit 2)", "mods (bit 3)", "mmap (bit 6)"};
    for (unsigned i = 0; i < 4; i++) {
        if (!(mbi->flags & needed[i])) {
            mb_printf("multiboot: info flag %s is not set\n", names[i]);
            ok = 0;
        }
    }
    if (!ok)
        mb_exit(1);

    mb_printf("multiboot: mem_lower %u KiB, mem_upper %u KiB\n", mbi->mem_lower, mbi->mem_upper);

    /* The memory map: print it, and the kernel must be in available RAM. */
    uint32_t image_start = (uint32_t)(uintptr_t)__image_start, image_end = (uint32_t)(uintptr_t)__image_end;
    int image_in_ram = 0;
    unsigned entries = 0;
    for (uint32_t off = 0; off + sizeof(struct mb_mmap_entry) <= mbi->mmap_length; entries++) {
        const struct mb_mmap_entry *e = (const struct mb_mmap_entry *)(mbi->mmap_addr + off);
        mb_printf("multiboot: mmap [0x%llx, 0x%llx) type %u\n", (unsigned long long)e->addr,
               (unsigned long long)(e->addr + e->len), e->type);
        if (e->type == 1 && e->addr <= image_start && e->addr + e->len >= image_end)
            image_in_ram = 1;
        if (e->size < 20) {
            mb_printf("multiboot: mmap entry with size %u\n", e->size);
            ok = 0;
            break;
        }
        off += e->size + 4;
    }
    if (!entries) {
        mb_printf("multiboot: the memory map is empty\n");
        ok = 0;
    } else if (!image_in_ram) {
        mb_printf("multiboot: no available mmap entry holds the kernel [0x%x, 0x%x)\n", image_start, image_end);
        ok = 0;
    }

    /* The command line. */
    const char *cmdline = (const char *)mbi->cmdline;
    mb_printf("multiboot: cmdline '%s'\n", cmdline);
    uint32_t want_bytes = 0, want_fnv = 0;
    if (!parse_decimal(find_option(cmdline, "module-bytes="), &want_bytes)) {
        mb_printf("multiboot: the command line has no module-bytes=N\n");
        ok = 0;
    }
    if (!parse_hex(find_option(cmdline, "module-fnv="), &want_fnv)) {
        mb_printf("multiboot: the command line has no module-fnv=0xHEX\n");
        ok = 0;
    }
    if (!ok)
        mb_exit(1);

    /* The module. */
    if (mbi->mods_count != 1) {
        mb_printf("multiboot: %u modules, expected 1\n", mbi->mods_count);
        mb_exit(1);
    }
    const struct mb_module *mod = (const struct mb_module *)mbi->mods_addr;
    const char *mod_name = (const char *)mod->string;
    mb_printf("multiboot: module [0x%x, 0x%x) '%s'\n", mod->mod_start, mod->mod_end, mod_name ? mod_name : "");
    if (mod->mod_end < mod->mod_start) {
        mb_printf("multiboot: the module ends before it starts\n");
        mb_exit(1);
    }
    uint32_t bytes = mod->mod_end - mod->mod_start;
    if (bytes != want_bytes) {
        mb_printf("multiboot: module length %u, cmdline says %u\n", bytes, want_bytes);
        ok = 0;
    }
    if (mod->mod_start & 0xfff) {
        mb_printf("multiboot: module at 0x%x is not page-aligned (header flag 0 asked for it)\n", mod->mod_start);
        ok = 0;
    }
    if (overlaps(mod->mod_start, mod->mod_end, image_start, image_end)) {
        mb_printf("multiboot: module overlaps the kernel [0x%x, 0x%x)\n", image_start, image_end);
        ok = 0;
    }
    if (!mod_name || !*mod_name) {
        mb_printf("multiboot: the module's string is empty\n");
        ok = 0;
    }
    uint32_t fnv = fnv1a((const uint8_t *)mod->mod_start, bytes);
    if (fnv != want_fnv) {
        mb_printf("multiboot: module FNV-1a 0x%08x, cmdline says 0x%08x\n", fnv, want_fnv);
        ok = 0;
    }
    if (!ok) {
        mb_printf("multiboot: FAILED\n");
        mb_exit(1);
    }
    mb_printf("multiboot: cmdline ok, module ok (%u bytes)\n", bytes);
    mb_exit(0);
}
