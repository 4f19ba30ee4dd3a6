/* A bump allocator over the RAM after the image: AP stacks and such. */
#include "boot.h"
#include "rt_string.h"
#include "report.h"

extern char __image_end[]; /* pc.ld */

static uintptr_t next, limit;

static void heap_init(void)
{
    /* The command line QEMU put after the image has been copied by now. */
    next = ((uintptr_t)__image_end + 0xfff) & ~(uintptr_t)0xfff;
    /* mem_upper: contiguous RAM from 1 MiB; without it assume 32 MiB. */
    uint64_t end = boot.mbi_flags & MBI_FLAG_MEM ? 0x100000u + (uint64_t)boot.mem_upper_kib * 1024u : 32u << 20;
    limit = (uintptr_t)(end < 0xc0000000u ? end : 0xc0000000u);
}

void *heap_alloc(size_t size, size_t align)
{
    if (!next)
        heap_init();
    uintptr_t p = (next + align - 1) & ~(uintptr_t)(align - 1);
    if (p + size > limit || p + size < p) {
        report_fail("heap: out of memory allocating %zu bytes (RAM ends at 0x%llx)", size, (unsigned long long)limit);
        report_summary();
    }
    next = p + size;
    return memset((void *)p, 0, size);
}
