#!/usr/bin/env bash
# Runs one command and checks its exit status and output; the CTest driver
# for the `kvm` tests (guests booted by `vmm run`) and the bad-input tests.
#
#   check-run.sh [--needs-kvm] [--status N] [--stdin FILE] [--expect REGEX]... [--reject REGEX]... -- COMMAND...
#
# --needs-kvm: without a usable /dev/kvm print "SKIPPED: <reason>" and exit 77
#   (CTest's SKIP_RETURN_CODE), unless HV_REQUIRE_KVM=1 (set by the nested
#   runner), where a missing /dev/kvm is a failure: inside the nested host the
#   tests must really run.
# --needs-tdp: also needs KVM with EPT/NPT (shadow paging); same rules.
# --needs-hw-kvm: also needs KVM on hardware virtualization (kvm_intel or
#   kvm_amd), which boots a stock Linux kernel and whose local APIC tracks
#   in-service interrupts; same rules.
# --stdin FILE: COMMAND's standard input (default /dev/null: a guest console
#   must never read, or put in raw mode, the terminal ctest was started from).
# --expect/--reject: extended regexes matched against stdout+stderr combined.
# --max-output BYTES: stdout+stderr together at most this long.
# --max-rss-kib KIB: the "vmm peak rss N KiB" line (vmm run --stats) at most
#   KIB; a missing line fails.
set -uo pipefail

needs_kvm=0 needs_tdp=0 needs_hw=0 status=0 stdin=/dev/null expects=() rejects=() max_output='' max_rss=''
while (($#)); do
  case $1 in
    --needs-kvm) needs_kvm=1; shift ;;
    --needs-tdp) needs_kvm=1 needs_tdp=1; shift ;;
    --needs-hw-kvm) needs_kvm=1 needs_hw=1; shift ;;
    --status) status=$2; shift 2 ;;
    --stdin) stdin=$2; shift 2 ;;
    --expect) expects+=("$2"); shift 2 ;;
    --reject) rejects+=("$2"); shift 2 ;;
    --max-output) max_output=$2; shift 2 ;;
    --max-rss-kib) max_rss=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "check-run.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
(($#)) || { echo "check-run.sh: no command" >&2; exit 2; }

source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/kvm-probe.sh"
missing=''
if ((needs_kvm)) && ! kvm_usable; then
  missing="/dev/kvm is not available on this host"
elif ((needs_tdp)) && ! kvm_has_tdp; then
  missing="KVM on this host runs without EPT/NPT, which --paging shadow needs"
elif ((needs_hw)) && ! kvm_runs_stock_kernels; then
  missing="KVM on this host is not kvm_intel or kvm_amd (kvm_pvm boots only PVM guest kernels, and its local APIC sets no ISR bits)"
fi
if [[ -n $missing ]]; then
  if [[ ${HV_REQUIRE_KVM:-0} == 1 ]]; then
    echo "FAILED: $missing, but HV_REQUIRE_KVM=1"
    exit 1
  fi
  echo "SKIPPED: $missing; the 'nested' tests run this test inside a nested KVM host"
  exit 77
fi

out=$(mktemp)
trap 'rm -f "$out"' EXIT
start=$EPOCHREALTIME
"$@" <"$stdin" >"$out" 2>&1
rc=$?
end=$EPOCHREALTIME
cat "$out"
printf 'check-run: exit status %d (expected %d), %s s: %s\n' "$rc" "$status" "$(awk "BEGIN { printf \"%.2f\", $end - $start }")" "$*"

fail=0
if ((rc != status)); then echo "check-run: FAIL: exit status $rc, expected $status"; fail=1; fi
for re in "${expects[@]}"; do
  grep -Eq -- "$re" "$out" || { echo "check-run: FAIL: output does not match /$re/"; fail=1; }
done
for re in "${rejects[@]}"; do
  if grep -Eq -- "$re" "$out"; then echo "check-run: FAIL: output matches /$re/, which it must not"; fail=1; fi
done
if [[ -n $max_output ]]; then
  bytes=$(wc -c <"$out")
  ((bytes <= max_output)) || { echo "check-run: FAIL: $bytes bytes of output, at most $max_output expected"; fail=1; }
fi
if [[ -n $max_rss ]]; then
  rss=$(sed -n 's/^ *vmm peak rss *\([0-9][0-9]*\) KiB.*/\1/p' "$out" | tail -n 1)
  if [[ -z $rss ]]; then echo "check-run: FAIL: no 'vmm peak rss' line (run vmm with --stats)"; fail=1
  elif ((rss > max_rss)); then echo "check-run: FAIL: vmm peak rss $rss KiB, at most $max_rss KiB expected"; fail=1
  else echo "check-run: vmm peak rss $rss KiB (at most $max_rss KiB)"; fi
fi
exit $fail
