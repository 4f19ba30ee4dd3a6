/* Command-line words and a barrier for the multi-vCPU test guests. */
#include "rt.h"

static int is_blank(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* The value text of `key=` as a word of `cmdline`, or NULL. */
static const char *find_value(const char *cmdline, const char *key)
{
    size_t klen = strlen(key);
    const char *p = cmdline;
    while (*p) {
        while (is_blank(*p))
            p++;
        if (!strncmp(p, key, klen) && p[klen] == '=')
            return p + klen + 1;
        while (*p && !is_blank(*p))
            p++;
    }
    return NULL;
}

int rt_arg_u64(const char *cmdline, const char *key, uint64_t *value)
{
    const char *v = find_value(cmdline, key);
    if (!v)
        return 0;
    uint64_t x = 0;
    int digits = 0;
    for (; *v >= '0' && *v <= '9'; v++, digits++) {
        if (x > (UINT64_MAX - (uint64_t)(*v - '0')) / 10)
            return -1;
        x = x * 10 + (uint64_t)(*v - '0');
    }
    if (!digits || (*v && !is_blank(*v)))
        return -1;
    *value = x;
    return 1;
}

int rt_arg_word(const char *cmdline, const char *word)
{
    size_t len = strlen(word);
    const char *p = cmdline;
    while (*p) {
        while (is_blank(*p))
            p++;
        if (!strncmp(p, word, len) && (p[len] == 0 || is_blank(p[len])))
            return 1;
        while (*p && !is_blank(*p))
            p++;
    }
    return 0;
}

void rt_barrier_wait(struct rt_barrier *b, uint32_t n)
{
    uint32_t gen = __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE);
    if (__atomic_add_fetch(&b->arrived, 1, __ATOMIC_ACQ_REL) == n) {
        __atomic_store_n(&b->arrived, 0, __ATOMIC_RELAXED);
        __atomic_store_n(&b->gen, gen + 1, __ATOMIC_RELEASE);
        return;
    }
    /* With many vCPUs (more than host CPUs, presumably), spin briefly, then
     * lend the host CPU to the vCPUs still on their way: they may not be
     * running at all. With few, only spin: every yield is an exit, and each
     * exit is a chance for the deferred shootdown path (NMI injected at
     * entry), whose rare nested-host triple faults are still open. */
    const uint32_t spin_limit = n > RT_BARRIER_YIELD_ABOVE ? 1024 : UINT32_MAX;
    for (uint32_t spins = 0; __atomic_load_n(&b->gen, __ATOMIC_ACQUIRE) == gen; spins++) {
        if (spins < spin_limit) {
            cpu_relax();
        } else {
            struct hv_call_yield y = {{HV_CALL_YIELD, sizeof(y)}};
            hv_call(&y.hdr);
        }
    }
}
