#!/usr/bin/env bash
# Runs one libFuzzer target for a while and prints its statistics.
#
#   scripts/fuzz.sh TARGET SECONDS [--jobs N] [--build DIR] [--defect NAME] [-- LIBFUZZER-FLAGS...]
#
# TARGET is one of the targets in tests/fuzz (ops, formats, exits, schedule,
# guest). Builds
# DIR (default build-fuzz: clang, -DHV_FUZZ=ON, so ASan + UBSan) when
# needed, then fuzzes starting from the committed corpus
# (tests/fuzz/TARGET/corpus, never written) with the target's dictionary;
# new inputs go to fuzz-out/TARGET/corpus. With --jobs N > 1, N processes
# (libFuzzer's fork mode). At the end one line of figures: executions,
# executions per second, coverage (edges and features), corpus size.
#
# --defect NAME builds the target with one deliberate defect compiled in
# (mmu/base/defects.hpp; tree build-fuzz-NAME, output fuzz-out/TARGET-NAME) and
# fuzzes from an empty corpus: the evidence that the target finds it. The
# elapsed time is printed either way.
#
# `guest` boots a VM per input (KVM with EPT/NPT): where this machine's KVM
# has none, the script runs it inside the nested KVM host
# (scripts/nested-kvm.sh; QEMU TCG, so a few inputs per second at most).
#
# A crash, leak, timeout or out-of-memory input is saved under
# fuzz-out/TARGET/crashes/ next to a .repro file holding the one command
# that replays it; the script prints both and exits 1. Exit 0: nothing
# found; 2: bad arguments or a failed build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

targets="$(sed -n 's/^set(HV_FUZZ_TARGETS \(.*\))$/\1/p' tests/fuzz/CMakeLists.txt) $(
  sed -n 's/^set(HV_FUZZ_KVM_TARGETS \(.*\))$/\1/p' tests/fuzz/CMakeLists.txt)"
defects=$(sed -n 's/^set(HV_DEFECTS \(.*\))$/\1/p' CMakeLists.txt)
usage() {
  echo "usage: scripts/fuzz.sh TARGET SECONDS [--jobs N] [--build DIR] [--defect NAME] [-- LIBFUZZER-FLAGS...]" >&2
  echo "  TARGET: one of: $targets" >&2
  echo "  NAME: one of: $defects" >&2
  exit 2
}
bad() { echo "fuzz.sh: $*" >&2; exit 2; }

(($# >= 2)) || usage
target=$1 seconds=$2
shift 2
[[ " $targets " == *" $target "* ]] || bad "expected a target (one of: $targets), found '$target'"
[[ $seconds =~ ^[0-9]+$ ]] && ((seconds >= 1 && seconds <= 86400)) ||
  bad "expected SECONDS from 1 to 86400, found '$seconds'"
jobs=1 build="" defect="" extra=()
while (($#)); do
  case $1 in
  --jobs)
    (($# >= 2)) || bad "--jobs needs a number"
    [[ $2 =~ ^[0-9]+$ ]] && (($2 >= 1 && $2 <= 64)) || bad "expected --jobs from 1 to 64, found '$2'"
    jobs=$2; shift 2 ;;
  --build)
    (($# >= 2)) || bad "--build needs a directory"
    build=$2; shift 2 ;;
  --defect)
    (($# >= 2)) || bad "--defect needs a name (one of: $defects)"
    [[ " $defects " == *" $2 "* ]] || bad "expected a defect (one of: $defects), found '$2'"
    defect=$2; shift 2 ;;
  --) shift; extra=("$@"); break ;;
  *) bad "unknown argument '$1' (expected --jobs N, --build DIR, --defect NAME or -- LIBFUZZER-FLAGS)" ;;
  esac
done
[[ -n $build ]] || build=build-fuzz${defect:+-$defect}

command -v clang++ >/dev/null || bad "clang++ not found: run scripts/setup.sh"
if [[ ! -f $build/CMakeCache.txt ]] || ! grep -q '^HV_FUZZ:BOOL=ON' "$build/CMakeCache.txt" ||
   ! grep -qx "HV_DEFECT:STRING=$defect" "$build/CMakeCache.txt"; then
  CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DHV_FUZZ=ON -DHV_DEFECT="$defect" >/dev/null 2>&1 ||
    bad "cannot configure $build"
fi
build_targets=("fuzz_$target")
[[ $target != guest ]] || build_targets+=(vmm) # for `vmm info` and the reproducer
ninja -C "$build" "${build_targets[@]}" >/dev/null || bad "cannot build ${build_targets[*]} in $build"
binary=$build/bin/fuzz_$target
runner=()   # what runs the binary: nothing, or the nested KVM host
timeout=25  # libFuzzer's limit per input, seconds
if [[ $target == guest ]]; then
  timeout=300 # a VM boot in the nested host takes seconds
  # Inputs up to FuzzGuestInput::kMaxInput (vmm/cli/fuzz_guest_command.hpp), all lengths from the start:
  # at a few inputs per second, libFuzzer's slow growth of the length limit would keep
  # the programs empty for minutes.
  extra=(-max_len=1028 -len_control=0 "${extra[@]}")
  if ! "$build/bin/vmm" info 2>/dev/null | grep -Eq 'TDP paging +yes'; then
    echo "fuzz guest: this machine's KVM cannot run shadow mode (no EPT/NPT): running in the nested KVM host"
    runner=(scripts/nested-kvm.sh --mem 4096 --timeout $((seconds + 1200)) --idle-timeout 900 --)
  fi
fi

out=fuzz-out/$target${defect:+-$defect}
mkdir -p "$out/corpus" "$out/crashes"
log=$out/last.log
flags=(-max_total_time="$seconds" -print_final_stats=1 -timeout="$timeout"
       -artifact_prefix="$out/crashes/")
[[ -f tests/fuzz/$target.dict ]] && flags+=(-dict="tests/fuzz/$target.dict")
((jobs > 1)) && flags+=(-fork="$jobs")
echo "fuzz $target${defect:+ with defect $defect}: ${seconds} s, $jobs job(s), $binary, log $log"
before=$(ls "$out/crashes" | grep -v '\.repro$' || true)
start=$(date +%s.%N)
set +e
corpora=("$out/corpus" "tests/fuzz/$target/corpus")
# A defect hunt starts from nothing: the committed corpus may already hold
# an input that trips the defect, which would say nothing about finding it.
[[ -z $defect ]] || { rm -rf "$out/corpus"; mkdir -p "$out/corpus"; corpora=("$out/corpus"); }
"${runner[@]}" "$binary" "${flags[@]}" "${extra[@]}" "${corpora[@]}" >"$log" 2>&1
status=$?
set -e
elapsed=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')

# Figures: the final statistics of the one process, or in fork mode the
# parent's last status line (the children's statistics are per job).
status_line=$(grep -E '^#[0-9]+[:[:space:]]' "$log" | tail -1 || true)
if ((jobs > 1)); then
  execs=$(sed -n 's/^#\([0-9]*\).*/\1/p' <<<"$status_line")
  rate=$(sed -n 's/.*exec\/s:\{0,1\} \([0-9]*\).*/\1/p' <<<"$status_line")
else
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
fi
cov=$(sed -n 's/.*cov: \([0-9]*\).*/\1/p' <<<"$status_line")
ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$status_line")
corpus="$(find "$out/corpus" -type f | wc -l) new"
[[ -n $defect ]] || corpus+=" + $(find "tests/fuzz/$target/corpus" -type f | wc -l) committed"
echo "fuzz $target: ${elapsed} s, ${execs:-?} executions, ${rate:-?} exec/s, coverage ${cov:-?} edges ${ft:-?} features, corpus $corpus inputs"

found=()
for f in "$out"/crashes/*; do
  [[ -f $f && $f != *.repro ]] || continue
  grep -qxF "$(basename "$f")" <<<"$before" && continue
  found+=("$f")
done
if ((${#found[@]})); then
  grep -E '^(fuzz |==[0-9]+==|SUMMARY|ERROR)' "$log" | head -20 >&2 || true
  for f in "${found[@]}"; do
    repro="$binary $f"
    [[ $target != guest ]] || repro="$build/bin/vmm fuzz-guest --input $f"
    ((${#runner[@]} == 0)) || repro="scripts/nested-kvm.sh -- $repro"
    echo "$repro" >"$f.repro"
    echo "fuzz $target: FOUND $(basename "$f" | cut -d- -f1): $f ($(stat -c %s "$f") bytes)" >&2
    echo "  reproduce: $repro" >&2
    if [[ -n $defect ]]; then
      echo "  (it replays only with the defect: any tree configured with -DHV_DEFECT=$defect)" >&2
    elif [[ $target != guest ]]; then
      echo "  (or in any build: <build>/bin/fuzz_${target}_replay $f)" >&2
    fi
  done
  exit 1
fi
if ((status != 0)); then
  tail -20 "$log" >&2
  echo "fuzz $target: libFuzzer exited $status without saving an input (see $log)" >&2
  exit 1
fi
echo "fuzz $target: no crash"
