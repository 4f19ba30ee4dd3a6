/* hello: vCPU 0 greets on the serial port and exits 0. */
#include "rt.h"

int guest_main(const struct guest_boot *boot)
{
    if (boot->vcpu != 0)
        halt_forever();
    printf("Hello from hv guest: vCPU %u of %u, %lu MiB RAM, cmdline '%s'\n", boot->vcpu, boot->ncpus,
           (unsigned long)(boot->ram_size >> 20), boot->cmdline);
    return 0;
}
