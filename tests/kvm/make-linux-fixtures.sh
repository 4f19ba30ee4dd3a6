#!/usr/bin/env bash
# make-linux-fixtures.sh KERNEL OUTDIR
#
# Damaged copies of a good bzImage and oversized initramfs files for the
# bad.linux-* tests:
#   vmlinuz-truncated      the first 1 MB only (the setup header is intact,
#                          the protected-mode kernel is cut)
#   vmlinuz-protocol-2.9   the boot protocol version (offset 0x206) set to 2.9
#   initrd-300M            sparse, larger than the tests' 256 MiB of RAM
#   initrd-190M            sparse, fits RAM but not above the kernel's init_size
set -euo pipefail
(($# == 2)) || { echo "usage: make-linux-fixtures.sh KERNEL OUTDIR" >&2; exit 2; }
kernel=$1 out=$2
mkdir -p "$out"
head -c 1000000 "$kernel" > "$out/vmlinuz-truncated"
cp "$kernel" "$out/vmlinuz-protocol-2.9"
chmod u+w "$out/vmlinuz-protocol-2.9"
printf '\011\002' | dd of="$out/vmlinuz-protocol-2.9" bs=1 seek=$((0x206)) conv=notrunc status=none
rm -f "$out/initrd-300M" "$out/initrd-190M"
truncate -s 300M "$out/initrd-300M"
truncate -s 190M "$out/initrd-190M"
