#!/usr/bin/env bash
# A Linux kernel runs where KVM is kvm_intel or kvm_amd (the `hwkvm` tests
# check that) and is refused up front, with the reason, on kvm_pvm, where a
# stock kernel would print nothing until --timeout.
#   linux-kvm-rule.sh VMM KERNEL
set -uo pipefail
vmm=$1 kernel=$2
source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/kvm-probe.sh"
kvm_usable_or_skip
if [[ ! -d /sys/module/kvm_pvm ]]; then
  echo "SKIPPED: KVM here is not kvm_pvm (the kvm.linux.* tests boot the kernel where KVM can)"
  exit 77
fi
start=$SECONDS
out=$("$vmm" run --timeout 60 "$kernel" 2>&1)
rc=$?
echo "$out"
echo "linux-kvm-rule: kvm_pvm: expecting the refusal (status 125) at once, got status $rc after $((SECONDS - start)) s"
[[ $rc == 125 && $out == *"is a Linux kernel, which needs KVM on hardware virtualization"* && $((SECONDS - start)) -lt 10 ]]
