#!/usr/bin/env bash
# `vmm run --paging shadow` runs where KVM has EPT/NPT and is refused, with
# the reason, where it has not.   shadow-tdp-rule.sh VMM IMAGE
set -uo pipefail
vmm=$1 image=$2
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/kvm-probe.sh"
kvm_usable_or_skip
out=$("$vmm" run --paging shadow --timeout 60 "$image" 2>&1)
rc=$?
echo "$out"
if kvm_has_tdp; then
  echo "shadow-tdp-rule: KVM has EPT/NPT: expecting the guest to run (status 0, 'Hello'), got status $rc"
  [[ $rc == 0 && $out == *Hello* ]]
else
  echo "shadow-tdp-rule: KVM has no EPT/NPT: expecting the refusal (status 125), got status $rc"
  [[ $rc == 125 && $out == *"--paging shadow needs KVM with two-dimensional paging"* ]]
fi
