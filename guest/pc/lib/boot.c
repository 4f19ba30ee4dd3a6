/* Multiboot information and the command line's key=value words. */
#include "boot.h"

#include "report.h"

struct boot_info boot;

struct mb_info { /* the part we read */
    uint32_t flags;
    uint32_t mem_lower, mem_upper;
    uint32_t boot_device;
    uint32_t cmdline;
};

void boot_read_multiboot(uint32_t magic, uint32_t info_addr)
{
    if (magic != MB_BOOT_MAGIC) {
        report_fail("multiboot: EAX was 0x%x, expected 0x%x; no command line or memory size", magic, MB_BOOT_MAGIC);
        return;
    }
    const struct mb_info *mbi = (const struct mb_info *)(uintptr_t)info_addr;
    boot.multiboot = true;
    boot.mbi_addr = info_addr;
    boot.mbi_flags = mbi->flags;
    if (mbi->flags & MBI_FLAG_MEM) {
        boot.mem_lower_kib = mbi->mem_lower;
        boot.mem_upper_kib = mbi->mem_upper;
    }
    if ((mbi->flags & MBI_FLAG_CMDLINE) && mbi->cmdline) {
        const char *s = (const char *)(uintptr_t)mbi->cmdline;
        size_t n = 0;
        while (s[n] && n + 1 < sizeof boot.cmdline) {
            boot.cmdline[n] = s[n];
            n++;
        }
        boot.cmdline[n] = 0;
        if (s[n])
            report_fail("multiboot: command line longer than %u bytes", BOOT_CMDLINE_MAX - 1);
    }
}

static bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\n'; }

const char *arg_value(const char *key, size_t *len)
{
    size_t klen = 0;
    while (key[klen])
        klen++;
    const char *found = NULL;
    for (const char *p = boot.cmdline; *p; p++) {
        if (p != boot.cmdline && !is_blank(p[-1]))
            continue;
        size_t i = 0;
        while (i < klen && p[i] == key[i])
            i++;
        if (i == klen && p[klen] == '=')
            found = p + klen + 1; /* the last one wins, as on Linux */
    }
    if (found && len) {
        size_t n = 0;
        while (found[n] && !is_blank(found[n]))
            n++;
        *len = n;
    }
    return found;
}

bool arg_copy(const char *key, char *buf, size_t size)
{
    size_t n;
    const char *s = arg_value(key, &n);
    if (!s || !size)
        return false;
    size_t i = 0;
    for (; i < n && i + 1 < size; i++)
        buf[i] = s[i];
    buf[i] = 0;
    return true;
}

static bool parse_number(const char *s, size_t n, uint64_t *out, size_t *used)
{
    unsigned base = 10;
    size_t i = 0;
    if (n > 2 && s[0] == '0' && (s[1] == 'x' || s[1] == 'X'))
        base = 16, i = 2;
    uint64_t v = 0;
    size_t first = i;
    for (; i < n; i++) {
        unsigned d;
        if (s[i] >= '0' && s[i] <= '9')
            d = (unsigned)(s[i] - '0');
        else if (base == 16 && s[i] >= 'a' && s[i] <= 'f')
            d = (unsigned)(s[i] - 'a' + 10);
        else if (base == 16 && s[i] >= 'A' && s[i] <= 'F')
            d = (unsigned)(s[i] - 'A' + 10);
        else
            break;
        if (v > (UINT64_MAX - d) / base)
            return false;
        v = v * base + d;
    }
    *out = v;
    *used = i;
    return i > first;
}

bool arg_u64(const char *key, uint64_t *out)
{
    size_t n, used;
    const char *s = arg_value(key, &n);
    if (!s)
        return false;
    if (parse_number(s, n, out, &used) && used == n)
        return true;
    char text[64];
    arg_copy(key, text, sizeof text);
    report_fail("command line: %s=%s is not a number", key, text);
    return false;
}

bool arg_size(const char *key, uint64_t *out)
{
    size_t n, used;
    const char *s = arg_value(key, &n);
    if (!s)
        return false;
    uint64_t v;
    if (parse_number(s, n, &v, &used)) {
        unsigned shift = 0;
        if (used + 1 == n) {
            char u = s[used];
            shift = u == 'K' || u == 'k' ? 10 : u == 'M' || u == 'm' ? 20 : u == 'G' || u == 'g' ? 30 : 64;
        } else if (used != n) {
            shift = 64;
        }
        if (shift < 64 && v <= (UINT64_MAX >> shift)) {
            *out = v << shift;
            return true;
        }
    }
    char text[64];
    arg_copy(key, text, sizeof text);
    report_fail("command line: %s=%s is not a size (bytes, or with a K/M/G suffix)", key, text);
    return false;
}

bool arg_is(const char *key, const char *word)
{
    size_t n;
    const char *s = arg_value(key, &n);
    if (!s)
        return false;
    size_t i = 0;
    while (i < n && word[i] && s[i] == word[i])
        i++;
    return i == n && !word[i];
}
