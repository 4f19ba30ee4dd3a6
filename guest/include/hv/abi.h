/*
 * The guest <-> VMM ABI: the one header shared by guest/ and the VMM.
 * Plain C so the freestanding guests (64-bit and 32-bit) can include it.
 *
 * Boot ABI (static ELF64 images, entered in 64-bit long mode):
 *   RIP = e_entry, RFLAGS = 0x2 (interrupts off)
 *   RDI = vCPU index (0 .. N-1)       RSI = number of vCPUs N
 *   RDX = guest-physical address of the NUL-terminated --cmdline (0: none)
 *   RCX = guest RAM size in bytes
 *   R8  = guest-physical address of struct hv_shadow_info in shadow mode
 *         (vmm run --paging shadow), 0 in identity mode
 *   RSP = top of this vCPU's own stack (HV_STACK_SIZE bytes, 16-byte aligned)
 *   CR3 = identity mode: identity map of guest RAM (and the first 4 GiB)
 *         with 2 MiB pages; shadow mode: the root of the VMM's shadow
 *         tables (see "Shadow paging" below)
 *   CS = 64-bit code selector HV_GDT_CODE64, DS/ES/SS/FS/GS = HV_GDT_DATA
 *   CR0.PE/PG/WP/NE/MP, CR4.PAE/OSFXSR/OSXMMEXCPT, EFER.LME/LMA/NXE/SCE.
 *   The guest installs its own IDT; none is set up for it.
 *   Every loadable segment's memory beyond its file size (.bss) is zero.
 *
 * Boot ABI (multiboot v1 ELF32 images): 32-bit protected mode, paging off,
 *   EAX = 0x2BADB002, EBX = guest-physical address of the multiboot info,
 *   ESP = top of vCPU 0's stack. Only vCPU 0 (the boot CPU, APIC ID 0)
 *   starts there; on the PC platform (vmm run --platform pc, the default)
 *   every other vCPU waits in wait-for-SIPI, as on a real PC, until the
 *   guest starts it with INIT/SIPI/SIPI through its local APIC. On the bare
 *   platform a multiboot image runs on one vCPU.
 *
 * On both platforms every vCPU of a 64-bit ELF image starts at e_entry with
 * the registers above (its index in RDI), and APIC ID = vCPU index.
 *
 * Guest-physical layout: [0, HV_RESERVED_END) belongs to the VMM (GDT, page
 * tables, boot information); loadable segments must lie above it. Stacks
 * are carved from the top of RAM below 4 GiB: with top = min(ram_size, 4 GiB),
 * vCPU i owns [top - (i+1)*HV_STACK_SIZE, top - i*HV_STACK_SIZE).
 * Hypercall blocks must lie below 4 GiB (the port takes a 32-bit address).
 * The identity map covers max(4 GiB, RAM rounded up to 1 GiB); nothing
 * above that is mapped. Multiboot modules are page-aligned; mod_end is
 * exclusive.
 */
#ifndef HV_ABI_H
#define HV_ABI_H

#include <stdint.h>

#define HV_RESERVED_END 0x100000u /* first 1 MiB */
#define HV_STACK_SIZE 0x4000u     /* 16 KiB per vCPU */

#define HV_GDT_CODE64 0x08u
#define HV_GDT_DATA 0x10u
#define HV_GDT_CODE32 0x18u

/* Ports. */
#define HV_DEBUG_EXIT_PORT 0x00f4u /* write V: `vmm run` exits with V (see README) */
#define HV_HYPERCALL_PORT 0x0500u  /* 32-bit OUT of a struct hv_call_header's gpa */
#define HV_SERIAL_PORT 0x03f8u     /* COM1, 16550 */

/*
 * Hypercalls. The guest builds a request block in its RAM that starts with
 * struct hv_call_header, and writes the block's guest-physical address with a
 * 32-bit OUT to HV_HYPERCALL_PORT. The VMM answers with a status in EAX
 * (enum hv_status) and may fill the block's output fields.
 */
struct hv_call_header {
    uint32_t nr;   /* enum hv_call_nr */
    uint32_t size; /* sizeof the whole block; must equal the call's struct */
};

enum hv_call_nr {
    HV_CALL_ECHO = 0,       /* struct hv_call_echo: out = in + 1 */
    HV_CALL_EXCEPTION = 1,  /* struct hv_call_exception: report a CPU exception */
    HV_CALL_PAGE_FAULT = 2, /* struct hv_call_page_fault: resolve a #PF (shadow paging) */
    HV_CALL_HOST_OP = 3,    /* struct hv_call_host_op: one host operation on one page, now */
    HV_CALL_VERIFY = 4,     /* struct hv_call_verify: end-of-run coherence check (shadow paging) */
    HV_CALL_YIELD = 5,      /* struct hv_call_yield: give this vCPU's host thread's CPU away */
    HV_CALL_NCALLS          /* the first unused number: HV_E_UNKNOWN_CALL from here on */
};

enum hv_status {
    HV_OK = 0,
    HV_E_UNKNOWN_CALL = 1, /* nr is not an enum hv_call_nr */
    HV_E_BAD_SIZE = 2,     /* header.size does not match the call */
    HV_E_FAULT = 3,        /* the block is not inside guest RAM */
    HV_E_NOT_SHADOW = 4,   /* the call needs shadow paging (vmm run --paging shadow) */
    HV_E_BAD_ARG = 5,      /* an argument is out of range (address, op, reserved bits) */
    HV_E_NO_MEMSLOT = 6,   /* the address is outside every memslot */
    HV_E_REFUSED = 7,      /* the host mapping refuses the access (e.g. a write to read-only) */
    HV_E_NO_MEMORY = 8,    /* no frame left for a page or a table */
    HV_E_BUSY = 9,         /* another vCPU's call of this kind is running (HV_CALL_VERIFY: one per VM at a time); retry */
};

struct hv_call_echo {
    struct hv_call_header hdr;
    uint64_t in;
    uint64_t out;
};

/*
 * A vCPU that waits for other vCPUs (a barrier) lends its host CPU to them:
 * with more vCPUs than host CPUs, a spinning vCPU otherwise holds the CPU a
 * vCPU it waits for needs, for a whole scheduler slice per spin.
 */
struct hv_call_yield {
    struct hv_call_header hdr;
};

#define HV_EXC_RECOVERABLE 1u /* the guest resumes after the report */

/* Saved general registers, in the order of HV_GPR_NAMES. */
enum {
    HV_RAX, HV_RBX, HV_RCX, HV_RDX, HV_RSI, HV_RDI, HV_RBP, HV_R8,
    HV_R9, HV_R10, HV_R11, HV_R12, HV_R13, HV_R14, HV_R15, HV_NGPRS
};

struct hv_call_exception {
    struct hv_call_header hdr;
    uint64_t vector;
    uint64_t error_code; /* 0 for vectors that push none */
    uint64_t rip;
    uint64_t cs;
    uint64_t rflags;
    uint64_t rsp;
    uint64_t ss;
    uint64_t cr2;
    uint64_t gprs[HV_NGPRS];
    uint32_t flags; /* HV_EXC_* */
    uint32_t reserved;
};

/*
 * A page fault in shadow mode: the #PF handler passes CR2, the error code
 * and the interrupted context (used for the crash report when the VMM runs
 * with --strict-faults). HV_OK: retry the access (the entry is installed,
 * or an invalidation raced and the access will fault again).
 */
#define HV_PF_KNOWN_BITS 0x1fu /* P, W/R, U/S, RSVD, I/D: anything else is HV_E_BAD_ARG */
struct hv_call_page_fault {
    struct hv_call_header hdr;
    uint64_t address;    /* CR2 */
    uint32_t error_code; /* the #PF error code */
    uint32_t reserved;   /* must be 0 */
    uint64_t rip, rsp, rflags;
    uint64_t gprs[HV_NGPRS];
};

/* Host operations a guest may ask for on a page of the shadow-mapped region. */
enum hv_host_op {
    HV_HOST_MIGRATE = 0,
    HV_HOST_UNMAP = 1,
    HV_HOST_PROTECT = 2,   /* read-only */
    HV_HOST_UNPROTECT = 3, /* writable again */
    HV_HOST_MERGE = 4,     /* merge address2's page into address's (same contents only) */
    HV_HOST_SWAP = 5,
    HV_HOST_AGE = 6,
    HV_HOST_NOPS
};

struct hv_call_host_op {
    struct hv_call_header hdr;
    uint32_t op;       /* enum hv_host_op */
    uint32_t reserved; /* must be 0 */
    uint64_t address;  /* a guest address in the shadow-mapped region */
    uint64_t address2; /* HV_HOST_MERGE only; 0 otherwise */
    uint64_t changed;  /* out: 1 when the host changed something */
};

/*
 * Shadow paging (vmm run --paging shadow).
 *
 * The guest runs on x86-64 tables the VMM's MMU builds (CR3 = their root).
 * Static identity-mapped ranges hold what the guest needs to run: the first
 * MiB (GDT, boot information, struct hv_shadow_info), the loaded image, and
 * the vCPU stacks with the shared area below them. The rest of guest RAM is
 * the MMU's frame space and is not mapped: its first part mirrors the VMM's
 * page tables (the VMM keeps them in its own memory and copies every entry
 * it writes here; it never reads this copy, so a guest that scribbles on it
 * through tables of its own only breaks its own translations; every entry
 * has its accessed bit set, so the CPU's walks never write), the rest holds
 * the region's pages. Guest-virtual
 * [region_base, region_base + region_size) is demand-mapped: a #PF there
 * goes to the VMM as HV_CALL_PAGE_FAULT. Static pages never fault.
 *
 * TLB shootdowns. When the host changes a page of the region, the VMM zaps
 * the shadow entries and every vCPU that may cache them must flush its TLB
 * before it touches memory again. The VMM writes the pages into the mailbox
 * (a seqlock: gen last, after count and pages), sets each target's
 * flush_all when it finds an earlier request still unacknowledged, then its
 * request to gen, and delivers an NMI. The guest's NMI handler, until
 * ack == request: reads r = request, exchanges flush_all with 0, reads gen,
 * count, the pages and gen again; INVLPGs the pages when both gens equal r,
 * flush_all was 0 and count <= HV_SHOOTDOWN_MAX_PAGES, else reloads CR3;
 * then writes ack = r. The VMM waits for the ack only while the vCPU is in
 * guest mode; a vCPU outside it gets the NMI before it runs guest code again.
 * A vCPU that does not acknowledge within 20 s ends the VM as a guest fault.
 * A vCPU gets no request before its runtime set slot.ready (with a full
 * barrier, after loading its IDT and before touching the region): until
 * then it caches nothing of the region, and an NMI could not be handled.
 */
#define HV_SHADOW_REGION_BASE 0x4000000000ull /* 256 GiB, guest-virtual */
#define HV_SHADOW_INFO 0x60000u               /* gpa of struct hv_shadow_info */
#define HV_SHOOTDOWN_MAX_PAGES 480u

struct hv_shootdown_slot { /* one per vCPU, 64 bytes apart */
    uint64_t request;   /* written by the VMM */
    uint64_t flush_all; /* set by the VMM, cleared by the guest */
    uint64_t ack;       /* written by the guest */
    uint64_t nmis;      /* NMIs this vCPU's handler ran (guest statistics) */
    uint64_t ready;     /* set by the guest: its NMI handler is installed */
    uint64_t pad[3];
};

struct hv_shootdown_mailbox {
    uint64_t gen;
    uint64_t count;
    uint64_t pages[HV_SHOOTDOWN_MAX_PAGES];
};

struct hv_shadow_info {
    uint64_t region_base; /* HV_SHADOW_REGION_BASE */
    uint64_t region_size; /* bytes, a multiple of 4096 */
    uint64_t slots;       /* gpa of struct hv_shootdown_slot[ncpus] */
    uint64_t unmap_started; /* gpa of uint64_t[region_size / 4096]: host unmaps begun, per page */
    uint64_t unmap_done;    /* gpa of uint64_t[region_size / 4096]: host unmaps finished, per page */
    uint64_t tsc_khz;     /* guest TSC frequency in kHz (0: unknown) */
    uint32_t flags;       /* HV_SHADOW_* */
    uint32_t reserved;
    struct hv_shootdown_mailbox mailbox;
};
#define HV_SHADOW_SKIP_SHOOTDOWN 1u /* --unsafe-skip-shootdown: no flush requests are sent */

/*
 * End-of-run coherence check: the guest passes a table of the last value it
 * wrote at each checked address of the region; the VMM reads each through
 * the memslots and the host tables (not through the shadow entries) and
 * counts the values that are gone. A value that reads as 0 is not lost when
 * unmap_started[page] is above the unmap_done[page] the guest read just
 * before its write: an unmap that had not finished by then may have
 * discarded the contents. The guest may add the losses it saw itself while
 * running (a word that did not read back as last written).
 *
 * The VMM copies the table (up to HV_VERIFY_MAX stamps, 24 MiB) so that the
 * guest cannot change it while it is checked; one call runs at a time per VM,
 * and a call while another vCPU's runs gets HV_E_BUSY at once (nothing is
 * checked or written back), so a guest calling it on every vCPU costs the
 * VMM one table's worth of memory. While the VMM reads the stamped words it
 * pauses the host churn (vmm run --churn) between two operations, so that no
 * page moves under the read, and resumes it afterwards; a pause waits for the
 * churn to finish one pass of its operations since the last resume, so a guest
 * calling VERIFY back to back slows the churn but cannot stop it.
 */
struct hv_stamp {
    uint64_t address;    /* guest-virtual, 8-byte aligned, inside the region */
    uint64_t value;      /* the last value written (0: never written; must read 0) */
    uint64_t unmap_done; /* unmap_done[page] read before that write */
};
struct hv_call_verify {
    struct hv_call_header hdr;
    uint64_t table;   /* gpa of struct hv_stamp[count] */
    uint64_t count;      /* at most HV_VERIFY_MAX */
    uint64_t guest_lost; /* in: losses the guest saw while running; added to the total the VMM reports */
    uint64_t lost;       /* out: entries whose value is gone */
    uint64_t checked;    /* out: entries checked */
};
#define HV_VERIFY_MAX (1u << 20)

#endif
