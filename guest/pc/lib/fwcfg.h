/*
 * fwcfg.h: QEMU's firmware configuration device, legacy I/O interface: a
 * 16-bit write of the key to the selector port 0x510 selects an item and
 * rewinds it; each byte read from 0x511 returns the next byte (zeros past
 * the end, and for keys that do not exist).
 */
#ifndef PC_FWCFG_H
#define PC_FWCFG_H

#include "cpu.h"

#define FW_CFG_PORT_SEL 0x510
#define FW_CFG_PORT_DATA 0x511

#define FW_CFG_SIGNATURE 0x00 /* "QEMU" */
#define FW_CFG_ID 0x01        /* bit 0: traditional interface, bit 1: DMA */
#define FW_CFG_RAM_SIZE 0x03  /* 64-bit */
#define FW_CFG_NB_CPUS 0x05   /* 16-bit: CPUs present at boot */
#define FW_CFG_MAX_CPUS 0x0f  /* 16-bit */
#define FW_CFG_CMDLINE_SIZE 0x14 /* 32-bit, including the NUL */
#define FW_CFG_CMDLINE_DATA 0x15

void fw_cfg_select(uint16_t key);
uint8_t fw_cfg_read8(void);
void fw_cfg_read(void *buf, size_t len);
/* Selects `key` and reads a little-endian integer of `bytes` (1..8). */
uint64_t fw_cfg_read_int(uint16_t key, unsigned bytes);
/* Whether key 0 reads "QEMU". */
bool fw_cfg_present(void);

#endif
