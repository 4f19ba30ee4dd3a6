#!/usr/bin/env bash
# First command of the README: install dependencies, build, and boot the
# demo guest. Uses /dev/kvm when this machine has it, otherwise boots a
# nested KVM host under QEMU and runs the demo inside it.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
scripts/setup.sh
scripts/build.sh build
if [[ -r /dev/kvm && -w /dev/kvm ]]; then
  echo "demo: booting build/guest/hello.elf on this machine's /dev/kvm"
  exec build/bin/vmm run --stats build/guest/hello.elf
fi
echo "demo: no usable /dev/kvm here; booting it inside a nested KVM host (QEMU TCG + Debian's kernel), ~10 s"
exec scripts/nested-kvm.sh -- build/bin/vmm run --stats build/guest/hello.elf
