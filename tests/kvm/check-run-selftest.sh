#!/usr/bin/env bash
# The nested-host triple-fault rule of check-run.sh: one more run only with
# HV_NESTED=1, an unexpected status, a triple fault and no audit problem.
set -uo pipefail
check=$(dirname "${BASH_SOURCE[0]}")/check-run.sh
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fails=0
expect() {  # name wanted-status wanted-runs env... -- check-run args...
  local name=$1 want=$2 runs=$3 rc n
  shift 3
  : > "$tmp/runs"
  env "$@" > "$tmp/log" 2>&1
  rc=$?
  n=$(wc -l < "$tmp/runs")
  if ((rc != want || n != runs)); then
    echo "FAIL: $name: status $rc after $n runs, expected $want after $runs"; cat "$tmp/log"; fails=1
  else
    echo "ok: $name: status $rc after $n runs"
  fi
}
# A guest that triple-faults on its first run only.
flaky="echo run >> $tmp/runs; [ \$(wc -l < $tmp/runs) -gt 1 ] && { echo fine; exit 0; }; echo 'guest crash on vcpu 0: triple fault (KVM_EXIT_SHUTDOWN)'; exit 126"
always="echo run >> $tmp/runs; echo 'guest crash on vcpu 0: triple fault (KVM_EXIT_SHUTDOWN)'; exit 126"
audit="echo run >> $tmp/runs; echo 'guest crash on vcpu 0: triple fault (KVM_EXIT_SHUTDOWN)'; echo 'vmm: shadow MMU audit found 1 problems after the run:'; exit 125"
expect "nested, once" 0 2 HV_NESTED=1 "$check" --status 0 --expect fine -- sh -c "$flaky"
expect "nested, twice" 1 2 HV_NESTED=1 "$check" --status 0 -- sh -c "$always"
expect "nested, audit problem" 1 1 HV_NESTED=1 "$check" --status 0 -- sh -c "$audit"
expect "nested, expected triple fault" 0 1 HV_NESTED=1 "$check" --status 126 -- sh -c "$always"
expect "not nested" 1 1 HV_NESTED=0 "$check" --status 0 -- sh -c "$flaky"
exit $fails
