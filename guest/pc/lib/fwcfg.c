/* fw_cfg legacy I/O access (fwcfg.h). */
#include "fwcfg.h"

#include "rt_string.h"

void fw_cfg_select(uint16_t key) { outw(FW_CFG_PORT_SEL, key); }

uint8_t fw_cfg_read8(void) { return inb(FW_CFG_PORT_DATA); }

void fw_cfg_read(void *buf, size_t len)
{
    uint8_t *b = buf;
    while (len--)
        *b++ = fw_cfg_read8();
}

uint64_t fw_cfg_read_int(uint16_t key, unsigned bytes)
{
    uint64_t v = 0;
    fw_cfg_select(key);
    for (unsigned i = 0; i < bytes && i < 8; i++)
        v |= (uint64_t)fw_cfg_read8() << (8 * i);
    return v;
}

bool fw_cfg_present(void)
{
    char sig[4];
    fw_cfg_select(FW_CFG_SIGNATURE);
    fw_cfg_read(sig, sizeof sig);
    return !memcmp(sig, "QEMU", 4);
}
