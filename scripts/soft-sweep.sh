#!/usr/bin/env bash
# The issue-3 evidence run: `vmm soft` with every churn operation, for 1, 2,
# 64 and 1024 vCPUs under each lock policy, one table row per run (the JSON
# of each run goes to DIR). Exit status 1 when any run lost a write, saw a
# violation or failed its audit.
# Usage: scripts/soft-sweep.sh [SECONDS] [DIR] (defaults: 2, build/soft-sweep)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
seconds=${1:-2}
dir=${2:-$root/build/soft-sweep}
vmm=$root/build/bin/vmm
churn=migrate=2000,unmap=500,protect=500,merge=200,swap=500,age=200
[[ -x $vmm ]] || "$root/scripts/build.sh" >/dev/null
mkdir -p "$dir"

val() { sed -n "s/^  \"$2\": \"\{0,1\}\([^\",]*\)\"\{0,1\},\{0,1\}$/\1/p" "$1"; }
churn_done() {
    local done=0 tried=0 op
    for op in migrate unmap protect merge swap age; do
        done=$((done + $(val "$1" churn_$op))); tried=$((tried + $(val "$1" churn_${op}_attempted)))
    done
    echo "$done/$tried"
}

echo "churn: $churn (operations per second), ${seconds}s per run, $(nproc) CPUs"
printf '%-5s %-6s %9s %9s %8s %9s %6s %10s %9s %7s %7s %7s %7s %11s %4s %4s %5s\n' \
    vcpus lock faults/s installs/s retries zaps/hold shtdwn targets deferred locks/f shared/f hlocks/f hshared/f churn lost viol audit
status=0
for vcpus in 1 2 64 1024; do
    for lock in global rw split; do
        json=$dir/soft-$vcpus-$lock.json
        # 512 pages per vCPU: each vCPU's pages fill their own leaf tables,
        # so "disjoint" means no table (and no split lock) is shared.
        if ! "$vmm" soft --vcpus "$vcpus" --pages 512 --seconds "$seconds" --lock "$lock" --churn "$churn" \
            --json "$json" >/dev/null; then
            status=1
        fi
        printf '%-5s %-6s %9s %9s %8s %9s %6s %10s %9s %7s %7s %7s %7s %11s %4s %4s %5s\n' "$vcpus" "$lock" \
            "$(val "$json" faults_per_second)" "$(val "$json" installs_per_second)" "$(val "$json" retries)" "$(val "$json" zaps_per_lock_hold)" \
            "$(val "$json" shootdowns)" "$(val "$json" shootdown_targets)" "$(val "$json" shootdown_deferred)" \
            "$(val "$json" lock_acquisitions_per_fault)" "$(val "$json" shared_atomics_per_fault)" \
            "$(val "$json" host_lock_acquisitions_per_fault)" "$(val "$json" host_shared_atomics_per_fault)" \
            "$(churn_done "$json")" "$(val "$json" lost_writes)" "$(val "$json" violations)" \
            "$(val "$json" audit_problems)"
    done
done
exit $status
