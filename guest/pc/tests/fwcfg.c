/*
 * fwcfg: QEMU's fw_cfg legacy I/O interface (0x510 selector, 0x511 data).
 * Checks the signature and ID, the CPU count and RAM size against
 * expect-cpus= and expect-mem=, max CPUs, the command line items against
 * the multiboot command line, and the interface's rules: an unknown key
 * reads as zeros, reading past an item's end gives zeros, and selecting a
 * key again restarts at offset 0.
 */
#include "pc.h"

const char pc_test_name[] = "fwcfg";

#define UNKNOWN_KEY 0x7ff0 /* no QEMU machine defines it */

static void check_identity(void)
{
    char sig[5] = {0};
    fw_cfg_select(FW_CFG_SIGNATURE);
    fw_cfg_read(sig, 4);
    report(!memcmp(sig, "QEMU", 4), "signature (key 0): expected 'QEMU', found '%s' (%02x %02x %02x %02x)", sig,
           (uint8_t)sig[0], (uint8_t)sig[1], (uint8_t)sig[2], (uint8_t)sig[3]);
    uint32_t id = (uint32_t)fw_cfg_read_int(FW_CFG_ID, 4);
    report(id & 1, "ID (key 1) bit 0, the traditional interface: found 0x%x", id);
}

static void check_cpus(unsigned expect)
{
    uint64_t cpus = fw_cfg_read_int(FW_CFG_NB_CPUS, 2);
    uint64_t max_cpus = fw_cfg_read_int(FW_CFG_MAX_CPUS, 2);
    if (expect)
        report_eq("CPU count (key 5) vs expect-cpus", expect, cpus);
    else
        report_skip("CPU count (key 5) is %llu (no expect-cpus= on the command line)", (unsigned long long)cpus);
    report(max_cpus >= cpus && cpus >= 1, "max CPUs (key 0x0f) %llu >= CPU count %llu >= 1",
           (unsigned long long)max_cpus, (unsigned long long)cpus);
}

static void check_ram(void)
{
    uint64_t ram = fw_cfg_read_int(FW_CFG_RAM_SIZE, 8);
    uint64_t expect;
    if (!arg_size("expect-mem", &expect)) {
        report_skip("RAM size (key 3) is %llu bytes (no expect-mem= on the command line)", (unsigned long long)ram);
        return;
    }
    report_eq("RAM size (key 3) vs expect-mem", expect, ram);
    /* The multiboot loader's mem_upper is the usable RAM from 1 MiB up:
     * all of it below the PCI hole, less what the firmware keeps at the top
     * (SeaBIOS: 128 KiB, where it puts the ACPI tables). */
    uint64_t top = ((uint64_t)boot.mem_upper_kib + 1024u) * 1024u;
    if (!(boot.mbi_flags & MBI_FLAG_MEM))
        report_fail("multiboot info has no memory size (flag bit 0)");
    else if (expect <= (2ull << 30))
        report(top <= expect && top + (1u << 20) >= expect,
               "multiboot mem_upper + 1 MiB is expect-mem or up to 1 MiB less: expected %llu, found %llu",
               (unsigned long long)expect, (unsigned long long)top);
    else
        report_skip("multiboot mem_upper: expect-mem above 2 GiB is split around the PCI hole");
}

/* The fw_cfg command line is the -append / --cmdline string; the multiboot
 * one may have the kernel's path in front (QEMU), so it must end with it. */
static void check_cmdline(void)
{
    uint32_t size = (uint32_t)fw_cfg_read_int(FW_CFG_CMDLINE_SIZE, 4);
    if (size == 0) {
        report_skip("command line (keys 0x14/0x15): size 0, the item is absent (QEMU 7.2 sets it for Linux kernels, "
                    "not for multiboot ones)");
        return;
    }
    static char text[BOOT_CMDLINE_MAX];
    if (!report(size <= sizeof text, "command line size (key 0x14) %u <= %u", size, BOOT_CMDLINE_MAX))
        return;
    fw_cfg_select(FW_CFG_CMDLINE_DATA);
    fw_cfg_read(text, size);
    size_t len = strlen(text);
    report(len + 1 == size, "command line data (key 0x15) is NUL-terminated at size - 1: length %zu, size %u", len,
           size);
    size_t mb_len = strlen(boot.cmdline);
    bool suffix = mb_len >= len && !strcmp(boot.cmdline + mb_len - len, text) &&
                  (mb_len == len || boot.cmdline[mb_len - len - 1] == ' ');
    report(suffix, "fw_cfg command line '%s' ends the multiboot one '%s'", text, boot.cmdline);
}

static bool all_zero(const uint8_t *b, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (b[i])
            return false;
    return true;
}

static void check_interface(void)
{
    uint8_t buf[16];
    fw_cfg_select(UNKNOWN_KEY);
    fw_cfg_read(buf, sizeof buf);
    report(all_zero(buf, sizeof buf), "unknown key 0x%x reads as zeros: first bytes %02x %02x %02x %02x",
           UNKNOWN_KEY, buf[0], buf[1], buf[2], buf[3]);

    /* The signature item is 4 bytes: bytes 4.. are past its end. */
    fw_cfg_select(FW_CFG_SIGNATURE);
    fw_cfg_read(buf, sizeof buf);
    report(!memcmp(buf, "QEMU", 4) && all_zero(buf + 4, 12),
           "reading past the end of key 0 gives zeros: bytes 4-7 %02x %02x %02x %02x", buf[4], buf[5], buf[6],
           buf[7]);

    /* Read two bytes, select again: reading restarts at offset 0. */
    fw_cfg_select(FW_CFG_SIGNATURE);
    fw_cfg_read(buf, 2);
    fw_cfg_select(FW_CFG_SIGNATURE);
    fw_cfg_read(buf, 4);
    report(!memcmp(buf, "QEMU", 4), "selecting key 0 again restarts at offset 0: read '%c%c%c%c'", buf[0], buf[1],
           buf[2], buf[3]);
}

void test_main(void)
{
    if (!fw_cfg_present()) {
        check_identity(); /* reports what was there instead */
        report_fail("no fw_cfg device at 0x510/0x511: the other checks cannot run");
        return;
    }
    check_identity();
    check_cpus(expected_cpus());
    check_ram();
    check_cmdline();
    check_interface();
}
