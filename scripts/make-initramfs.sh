#!/usr/bin/env bash
# make-initramfs.sh OUTPUT INIT [BUSYBOX]
#
# Writes a newc cpio archive (an initramfs; gzip-compressed when OUTPUT ends
# in .gz) holding INIT as /init, a static busybox as /bin/busybox and the
# empty directories the init mounts on. Needs cpio; busybox defaults to the
# static one from busybox-static (scripts/setup.sh installs both).
set -euo pipefail
(($# == 2 || $# == 3)) || { echo "usage: make-initramfs.sh OUTPUT INIT [BUSYBOX]" >&2; exit 2; }
out=$1 init=$2 busybox=${3:-}
if [[ -z $busybox ]]; then
    for b in /bin/busybox /usr/bin/busybox; do [[ -x $b ]] && { busybox=$b; break; }; done
fi
[[ -n $busybox && -x $busybox ]] || { echo "make-initramfs.sh: static busybox not found (install busybox-static)" >&2; exit 1; }
# A dynamically linked busybox would need a libc the archive does not have.
if LC_ALL=C readelf -l "$busybox" 2>/dev/null | grep -q 'Requesting program interpreter'; then
    echo "make-initramfs.sh: $busybox is dynamically linked; the initramfs needs busybox-static" >&2; exit 1
fi
command -v cpio >/dev/null || { echo "make-initramfs.sh: cpio not found (install cpio)" >&2; exit 1; }
[[ -f $init ]] || { echo "make-initramfs.sh: init script $init not found" >&2; exit 1; }

stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT
mkdir -p "$stage"/{bin,dev,proc,sys,tmp}
cp "$busybox" "$stage/bin/busybox"
cp "$init" "$stage/init"
chmod 755 "$stage/init" "$stage/bin/busybox"
tmp_out="$out.tmp.$$"
# Fixed order and owner, so the same inputs give the same archive.
if [[ $out == *.gz ]]; then
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 | gzip -9n) > "$tmp_out"
else
    (cd "$stage" && find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0) > "$tmp_out"
fi
mv "$tmp_out" "$out"
