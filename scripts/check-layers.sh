#!/usr/bin/env bash
# The dependency rule of DESIGN.md ("The layers and where code lives"):
# every #include "..." of a source under mmu/, vmm/ or devices/ names a
# folder its own folder may depend on. Prints each include that breaks the
# rule and fails; nothing is built.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

# Folder -> the folders its sources may include (itself first).
declare -A may=(
  [mmu/base]="mmu/base mmu/sync"
  [mmu/sync]="mmu/sync"
  [mmu/table]="mmu/table mmu/base mmu/sync"
  [mmu/host]="mmu/host mmu/table mmu/base mmu/sync"
  [mmu/secondary]="mmu/secondary mmu/host mmu/table mmu/base mmu/sync"
  [mmu/guestpt]="mmu/guestpt mmu/secondary mmu/host mmu/table mmu/base mmu/sync"
  [mmu/soft]="mmu/soft mmu/guestpt mmu/secondary mmu/host mmu/table mmu/base mmu/sync"
  [mmu/check]="mmu/check mmu/guestpt mmu/secondary mmu/host mmu/table mmu/base mmu/sync"
  [devices]="devices mmu/base"
)
mmu_lib="mmu/soft mmu/guestpt mmu/secondary mmu/host mmu/table mmu/base mmu/sync devices"
may[vmm/kvm]="vmm/kvm $mmu_lib"
may[vmm/platform]="vmm/platform ${may[vmm/kvm]}"
may[vmm/boot]="vmm/boot ${may[vmm/platform]}"
may[vmm/shadow]="vmm/shadow ${may[vmm/boot]}"
may[vmm/run]="vmm/run ${may[vmm/shadow]}"
may[vmm/bench]="vmm/bench ${may[vmm/run]}"
may[vmm/cli]="vmm/cli ${may[vmm/bench]}"

bad=0 files=0
while IFS= read -r file; do
  folder=$(dirname "$file")
  allowed=${may[$folder]:-}
  if [[ -z $allowed ]]; then
    echo "$file: its folder $folder has no place in the layer rule (scripts/check-layers.sh)"
    bad=1
    continue
  fi
  files=$((files + 1))
  while IFS=: read -r line inc; do
    inc=${inc#*\"}
    inc=${inc%%\"*}
    [[ $inc == */* ]] || continue # hv/abi.h and system-style names are not ours to layer
    [[ $inc == hv/* ]] && continue # the guest ABI header, shared by everyone
    ok=0
    for a in $allowed; do
      [[ $(dirname "$inc") == "$a" ]] && ok=1 && break
    done
    if ((!ok)); then
      echo "$file:$line: includes $inc, but $folder may depend only on: $allowed"
      bad=1
    fi
  done < <(grep -n '^#include "' "$file" || true)
done < <(if git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git ls-files 'mmu/*.hpp' 'mmu/*.cpp' 'vmm/*.hpp' 'vmm/*.cpp' 'devices/*.hpp' 'devices/*.cpp'
else
  find mmu vmm devices -name '*.[ch]pp' | sort
fi)
if ((bad)); then
  echo "layers: includes above point the wrong way (DESIGN.md, \"The layers and where code lives\")" >&2
  exit 1
fi
echo "layers ok: $files files"
