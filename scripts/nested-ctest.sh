#!/usr/bin/env bash
# The `nested` CTest test: boot nested KVM hosts (scripts/nested-kvm.sh) and
# run there the `kvm`-labelled tests of BUILD_DIR that could not run here,
# where they must really run (HV_REQUIRE_KVM=1 turns a skip into a failure):
#   no usable /dev/kvm          every `kvm` test
#   KVM without EPT/NPT         the `tdp` tests (shadow paging; e.g. kvm_pvm)
#   KVM with EPT/NPT            nothing: all ran directly, so this test skips
# HV_NESTED=1 forces the nested run of every `kvm` test.
#
# Hosts side by side: QEMU's single-threaded TCG (nested-kvm.sh's default,
# the one mode that does not corrupt nested guests) keeps one host core busy
# per nested host, so the tests are split over HV_NESTED_HOSTS hosts (1..8;
# default 2 when there are 2 or more cores, else 1) that run at once. The
# split balances the tests' COST properties (about their seconds in an
# earlier nested run; 2 when unset): longest first, each to the host with the
# least so far. Each host's output lines start with [hostN].
#
# A hung nested host: under multi-threaded TCG (HV_NESTED_TCG=multi) the
# emulated L1 kernel locked up about once in 150-400 shadow-mode runs; the
# single-threaded default has not been seen to. A hung host cannot time out
# a test, so nested-kvm.sh stops QEMU once the tests print nothing for IDLE
# seconds and dumps where the CPUs were; the tests of that host that had not
# passed then run once more in a fresh nested host, and the log says so.
# Test failures are never retried.
#   nested-ctest.sh BUILD_DIR [extra ctest args...]
# The extra arguments also select the tests; a -R among them is overridden
# by each host's own list of names (ctest keeps the last -R).
# HV_NESTED_IDLE=S changes IDLE (default 1020 s; the longest test's limit is
# 960 s, and ctest prints nothing while a test runs).
set -euo pipefail
build=$(cd "${1:?usage: nested-ctest.sh BUILD_DIR}" && pwd)
shift
root=$(cd "$(dirname "$0")/.." && pwd)
hosts=${HV_NESTED_HOSTS:-$(($(nproc) >= 2 ? 2 : 1))}
if ! [[ $hosts =~ ^[1-8]$ ]]; then
  echo "nested-ctest: HV_NESTED_HOSTS must be 1..8, got '$hosts'" >&2
  exit 2
fi
source "$root/scripts/kvm-probe.sh"
label=kvm
if [[ ${HV_NESTED:-0} != 1 ]] && kvm_usable; then
  if kvm_has_tdp; then
    echo "SKIPPED: /dev/kvm with EPT/NPT is usable here, so the kvm-labelled tests ran directly"
    exit 77
  fi
  echo "nested-ctest: KVM here has no EPT/NPT: running the shadow-paging (tdp) tests nested"
  label=tdp
fi
export HV_REQUIRE_KVM=1
readonly TEST_TIMEOUT=150 IDLE=${HV_NESTED_IDLE:-1020} EXIT_HUNG=124
extra=("$@")
work=$(mktemp -d "${TMPDIR:-/tmp}/nested-ctest.XXXXXX")
trap 'rm -rf "$work"' EXIT

# The selected tests, split into the hosts' lists ($work/hostN.tests, a name
# a line). ctest's JSON is the documented way to read test properties.
# The `hwkvm` tests need a nested host of their own (scripts/nested-linux-ctest.sh).
ctest --test-dir "$build" -L "$label" -LE hwkvm "${extra[@]}" --show-only=json-v1 > "$work/tests.json"
/usr/bin/python3 - "$work" "$hosts" <<'PYTHON'
import json, sys
work, hosts = sys.argv[1], int(sys.argv[2])
with open(f"{work}/tests.json") as f:
    tests = json.load(f)["tests"]
def cost(test):
    return next((float(p["value"]) for p in test["properties"] if p["name"] == "COST"), 2.0)
load = [0.0] * hosts
names = [[] for _ in range(hosts)]
for test in sorted(tests, key=cost, reverse=True):
    h = load.index(min(load))
    load[h] += cost(test)
    names[h].append(test["name"])
for h in range(hosts):
    with open(f"{work}/host{h + 1}.tests", "w") as f:
        f.writelines(n + "\n" for n in names[h])
    print(f"nested-ctest: host{h + 1}: {len(names[h])} tests, COST {load[h]:.0f}")
PYTHON

name_regex() { # a file of test names -> ^(a|b)$, regex characters escaped
  printf '^(%s)$' "$(sed 's/[][\.*^$+?(){}|]/\\&/g' "$1" | paste -sd '|')"
}

# One nested host running the tests named in LIST; its output goes to LOG
# and, prefixed with [TAG], to stdout. Returns ctest's status (124: hung).
run_nested() { # LIST LOG TAG
  "$root/scripts/nested-kvm.sh" --cpus 2 --mem 3072 --timeout 1400 --idle-timeout "$IDLE" -- \
    ctest --test-dir "$build" -L "$label" -LE hwkvm --output-on-failure --timeout "$TEST_TIMEOUT" "${extra[@]}" \
    -R "$(name_regex "$1")" 2>&1 | tee "$2" | sed -u "s/^/[$3] /"
  return "${PIPESTATUS[0]}"
}

# One host's whole job: its list, and once more in a fresh host if it hung.
run_host() { # N
  local tag=host$1 rc=0
  run_nested "$work/$tag.tests" "$work/$tag.log" "$tag" || rc=$?
  ((rc == EXIT_HUNG)) || return "$rc"
  # The tests that passed before the hang; the rest (with the one that hung) rerun.
  sed -n 's/.*Test *#[0-9]*: \([^ ]*\) \.* *Passed.*/\1/p' "$work/$tag.log" | sort -u > "$work/$tag.passed"
  grep -vxF -f "$work/$tag.passed" "$work/$tag.tests" > "$work/$tag.rerun" || true
  echo "[$tag] nested-ctest: THE NESTED HOST HUNG (dump above); $(wc -l < "$work/$tag.passed") of its tests" \
    "had passed. Running the other $(wc -l < "$work/$tag.rerun") once more in a fresh nested host."
  rc=0
  run_nested "$work/$tag.rerun" "$work/$tag.rerun.log" "$tag" || rc=$?
  ((rc != EXIT_HUNG)) || echo "[$tag] nested-ctest: the nested host hung again; giving up"
  return "$rc"
}

pids=()
for ((h = 1; h <= hosts; h++)); do
  [[ -s $work/host$h.tests ]] || continue
  run_host "$h" &
  pids+=($!)
done
rc=0
for p in "${pids[@]}"; do
  r=0
  wait "$p" || r=$?
  ((rc != 0)) || rc=$r
done
echo "nested-ctest: ${#pids[@]} nested hosts done; status $rc"
exit "$rc"
