#!/usr/bin/env bash
# Mutation check: applies each committed one-line protocol mutation
# (tests/mutations/mutations.txt) to a scratch copy of the sources and
# reports which test or fuzzer catches it, and how fast (docs/mutations.md).
#
#   scripts/mutation-check.sh [--only NAME]... [--fuzz-seconds N] [--soft-seconds N]
#                             [--source worktree|head] [--scratch DIR] [--out DIR]
#                             [--no-baseline] [--fast] [--list]
#
# The sources: the tracked files (git ls-files) as they are in the working
# tree (--source worktree, the default: what scripts/test.sh tests), or as
# committed at HEAD (--source head: git archive). They are copied into
# SCRATCH/src (default SCRATCH: $TMPDIR/hv-mutation-check, or
# /tmp/hv-mutation-check), file by file and only where the content differs,
# so the build trees there stay incremental across runs and mutations.
#
# Every mutation's original line must occur exactly once in its file, else
# the script stops before building anything: the source drifted and the
# mutation must be brought up to date.
#
# Full check (the default): one clang tree, SCRATCH/build (-DHV_FUZZ=ON:
# ASan+UBSan and the libFuzzer targets, warnings not errors), built once
# unmutated; with --no-baseline left out, the cheap catchers must pass on it
# first. Then per mutation: apply it, build incrementally, and run the
# catchers in this order until one fails:
#   corpus     the fuzz corpus replays (ops, schedule, formats)
#   unit       the MMU unit tests (tests/unit/mmu/test_mmu_*.cpp; doctest
#              --abort-after=1)
#   soft       `vmm soft`, SOFT-SECONDS each (default 3), all churn, 4 vCPUs
#              sharing 1024 pages: both TLB models x (seq/rw,
#              ptlock/split, range-active/global)
#   schedule   scripts/fuzz.sh schedule FUZZ-SECONDS (default 120)
#   ops        scripts/fuzz.sh ops FUZZ-SECONDS
# (each fuzzer starts from its committed corpus, never from inputs an
# earlier mutation's run found), then restore the file. One thing runs at a
# time. Prints the table and writes OUT/mutations.json and
# OUT/mutations.md (default OUT: SCRATCH/results).
#
# --fast (scripts/test.sh's stage): every mutation must still apply; the
# mutations with a `fast:` test file are then checked in a small tree
# (SCRATCH/fast-build: tests/mutations/CMakeLists.txt over SCRATCH/src, the
# MMU library and those test files, g++ -O1): the tests pass unmutated, and each such
# mutation makes its file's tests fail.
#
# --list prints the mutations and exits.
#
# Exit status: 0 done (in --fast: all caught); 1 a mutation no longer
# applies, the unmutated tree fails a catcher, or (--fast) a mutation was
# not caught; 2 bad arguments, a malformed mutations file or a failed build.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mutations_file=tests/mutations/mutations.txt

usage() { # STATUS
  echo "usage: scripts/mutation-check.sh [--only NAME]... [--fuzz-seconds N] [--soft-seconds N] [--source worktree|head]
                                 [--scratch DIR] [--out DIR] [--no-baseline] [--fast] [--list]" >&2
  exit "$1"
}
bad() { echo "mutation-check.sh: $*" >&2; exit 2; }
say() { echo "mutation-check: $*"; }

only=() fuzz_seconds=120 soft_seconds=3 source=worktree fast=0 list=0 baseline=1 out=""
scratch=${TMPDIR:-/tmp}/hv-mutation-check
positive() { # NAME VALUE MAX
  [[ $2 =~ ^[0-9]+$ ]] && (($2 >= 1 && $2 <= $3)) || bad "expected $1 from 1 to $3, found '$2'"
}
while (($#)); do
  case $1 in
  --only)
    (($# >= 2)) || bad "--only needs a mutation name"
    only+=("$2"); shift 2 ;;
  --fuzz-seconds)
    (($# >= 2)) || bad "--fuzz-seconds needs a number"
    positive --fuzz-seconds "$2" 86400; fuzz_seconds=$2; shift 2 ;;
  --soft-seconds)
    (($# >= 2)) || bad "--soft-seconds needs a number"
    positive --soft-seconds "$2" 600; soft_seconds=$2; shift 2 ;;
  --source)
    (($# >= 2)) || bad "--source needs worktree or head"
    [[ $2 == worktree || $2 == head ]] || bad "expected --source worktree or head, found '$2'"
    source=$2; shift 2 ;;
  --scratch)
    (($# >= 2)) || bad "--scratch needs a directory"
    scratch=$2; shift 2 ;;
  --out)
    (($# >= 2)) || bad "--out needs a directory"
    out=$2; shift 2 ;;
  --no-baseline) baseline=0; shift ;;
  --fast) fast=1; shift ;;
  --list) list=1; shift ;;
  -h | --help) usage 0 ;;
  *) bad "unknown argument '$1' (expected --only NAME, --fuzz-seconds N, --soft-seconds N, --source worktree|head, --scratch DIR, --out DIR, --no-baseline, --fast or --list)" ;;
  esac
done
[[ -n $scratch ]] || bad "--scratch needs a directory"
mkdir -p "$scratch" || bad "cannot create the scratch directory $scratch"
scratch=$(cd "$scratch" && pwd)
case $scratch/ in
"$root"/*) bad "the scratch directory $scratch lies inside the repository: expected one outside $root" ;;
esac
out=${out:-$scratch/results}

source "$root/scripts/mutation/mutations-file.sh"

# ---- Sources -------------------------------------------------------------------
src=$scratch/src
logs=$scratch/logs
mkdir -p "$src" "$logs"
now_us() { echo "${EPOCHREALTIME/./}"; }
secs_since() { # START-US -> seconds with two decimals
  local d=$(($(now_us) - $1))
  printf '%d.%02d' $((d / 1000000)) $((d % 1000000 / 10000))
}
started=$(now_us)

sync_sources() {
  local stage=$scratch/stage f changed=0 removed=0
  commit=$(git -C "$root" rev-parse HEAD) # what the results are for
  [[ $source == head ]] || ! git -C "$root" status --porcelain --untracked-files=no | grep -q . ||
    commit+=" + working tree changes"
  rm -rf "$stage"
  mkdir -p "$stage"
  if [[ $source == head ]]; then
    git -C "$root" archive "$commit" | tar -x -C "$stage"
  else
    git -C "$root" ls-files -z | while IFS= read -r -d '' f; do
      if [[ -e $f ]]; then printf '%s\0' "$f"; fi
    done | tar --null -T - -cf - | tar -x -C "$stage"
  fi
  # Copy what differs (a copy is newer than every object: it rebuilds), and
  # drop what the sources no longer have; fuzz-out/ is fuzz.sh's output.
  while IFS= read -r -d '' f; do
    f=${f#"$stage"/}
    if ! cmp -s "$stage/$f" "$src/$f"; then
      mkdir -p "$(dirname "$src/$f")"
      rm -f "$src/$f"
      cp -P "$stage/$f" "$src/$f"
      changed=$((changed + 1))
    fi
  done < <(find "$stage" \( -type f -o -type l \) -print0)
  while IFS= read -r -d '' f; do
    f=${f#"$src"/}
    if [[ ! -e $stage/$f && ! -L $stage/$f ]]; then
      rm -f "$src/$f"
      removed=$((removed + 1))
    fi
  done < <(find "$src" -path "$src/fuzz-out" -prune -o \( -type f -o -type l \) -print0)
  say "sources: tracked files of $( [[ $source == head ]] && echo "HEAD ($(git -C "$root" rev-parse --short HEAD))" || echo "the working tree") in $src ($changed copied, $removed removed)"
}
sync_sources

# Every mutation (not only the selected ones) must still apply exactly once.
drifted=0
for i in "${!M_NAME[@]}"; do
  f=$src/${M_FILE[i]}
  if [[ ! -f $f ]]; then
    echo "mutation-check.sh: mutation ${M_NAME[i]} ($mutations_file:${M_AT[i]}): no file ${M_FILE[i]}" >&2
    drifted=1
    continue
  fi
  count=$(grep -cxF -- "${M_ORIG[i]}" "$f" || true)
  if ((count != 1)); then
    echo "mutation-check.sh: mutation ${M_NAME[i]} ($mutations_file:${M_AT[i]}): its original line occurs $count times in ${M_FILE[i]}, expected exactly once: the source drifted; update the mutation" >&2
    echo "  line: ${M_ORIG[i]}" >&2
    drifted=1
  fi
done
if ((drifted)); then exit 1; fi
say "all ${#M_NAME[@]} mutations apply (each original line occurs exactly once)"

# Applying and restoring one mutation. The restore copies the file back
# from the stage (a new mtime: the next build recompiles it).
current=""
restore() {
  [[ -n $current ]] || return 0
  cat "$scratch/stage/${M_FILE[current]}" >"$src/${M_FILE[current]}"
  current=""
}
trap restore EXIT
trap 'restore; exit 130' INT TERM
apply() { # index
  local i=$1 f=$src/${M_FILE[$1]}
  current=$i
  ORIG=${M_ORIG[i]} REPL=${M_REPL[i]} HASREPL=${M_HASREPL[i]} awk '
    ($0 "") == ENVIRON["ORIG"] { if (ENVIRON["HASREPL"] == "1") print ENVIRON["REPL"]; next }
    { print }' "$f" >"$f.mutated"
  cat "$f.mutated" >"$f"
  rm -f "$f.mutated"
}

json_str() { # a JSON string literal
  local s=$1
  s=${s//\\/\\\\}
  s=${s//\"/\\\"}
  s=${s//$'\t'/\\t}
  s=${s//$'\n'/\\n}
  printf '"%s"' "$s"
}
md_cell() { local s=${1//|/\\|}; printf '%s' "$s"; }
# The doctest case of a log's first failure (an ERROR or FATAL ERROR line
# of doctest, or a sanitizer's report): doctest also names a case for its
# MESSAGE lines, which are no failures.
failed_case() {
  local tc what where
  tc=$(awk '/^TEST CASE: / { tc = $0; sub(/^TEST CASE: */, "", tc) }
            /: (FATAL )?ERROR: / && tc != "" { print tc; exit }' "$1")
  if [[ -z $tc ]]; then # a sanitizer ended the process before doctest could say
    what=$(sed -n 's/^==[0-9]*==ERROR: \([A-Za-z]*Sanitizer: [a-z-]*\).*/\1/p' "$1" | head -1)
    where=$(grep -o 'tests/unit/[a-z]*/test_[a-z0-9_]*\.cpp:[0-9]*' "$1" | head -1 || true)
    [[ -z $what ]] || tc="$what${where:+ in $where}"
  fi
  echo "$tc"
}

source "$root/scripts/mutation/fast.sh"

# ---- Full check ----------------------------------------------------------------------
build=$scratch/build
targets=(unit_tests fuzz_ops_replay fuzz_schedule_replay fuzz_formats_replay fuzz_ops fuzz_schedule vmm)
command -v clang++ >/dev/null || bad "clang++ not found: run scripts/setup.sh"
if [[ ! -f $build/CMakeCache.txt ]]; then
  CC=clang CXX=clang++ cmake -S "$src" -B "$build" -G Ninja -DHV_FUZZ=ON -DHV_DEFECT= -DHV_WERROR=OFF \
    >"$logs/configure.log" 2>&1 || { cat "$logs/configure.log" >&2; bad "cannot configure $build (log above)"; }
fi
build_full() { ninja -C "$build" "${targets[@]}" >"$1" 2>&1; }
t0=$(now_us)
build_full "$logs/build-unmutated.log" || { tail -30 "$logs/build-unmutated.log" >&2; bad "cannot build the unmutated tree (log above)"; }
say "unmutated tree $build built in $(secs_since "$t0") s"

soft_configs=("recheck seq rw" "hardware seq rw" "recheck ptlock split" "hardware ptlock split"
              "recheck range-active global" "hardware range-active global")
churn=migrate=2000,unmap=500,protect=500,merge=200,swap=500,age=200

# Each catcher: `catch_NAME LOG` returns 0 when nothing failed, else sets
# `detail` (what failed) and returns 1.
detail=""
catch_corpus() {
  local t
  for t in ops schedule formats; do
    # In a subshell: its report of a crash (ASan aborts) goes to the log.
    if ! (if HV_SCHEDULE_REPLAY_CHECK=1 timeout 900 "$build/bin/fuzz_${t}_replay" "$src/tests/fuzz/$t/corpus"; then exit 0; else exit $?; fi) >>"$1" 2>&1; then
      detail="fuzz.corpus.$t"
      return 1
    fi
  done
}
catch_unit() {
  local status=0
  (if timeout 1800 "$build/bin/unit_tests" '--source-file=*/test_mmu_*' --abort-after=1 --no-colors=true; then exit 0; else exit $?; fi) >"$1" 2>&1 ||
    status=$?
  ((status)) || return 0
  detail=$(failed_case "$1")
  ((status != 124)) || detail="timeout${detail:+ in $detail}"
  detail=${detail:-exit status $status}
  return 1
}
catch_soft() {
  local c m coh lock status
  for c in "${soft_configs[@]}"; do
    read -r m coh lock <<<"$c"
    status=0
    echo "== vmm soft --tlb-model $m --coherence $coh --lock $lock" >>"$1"
    (if timeout $((soft_seconds + 300)) "$build/bin/vmm" soft --vcpus 4 --sharing shared --pages 1024 \
      --seconds "$soft_seconds" --tlb-model "$m" --coherence "$coh" --lock "$lock" --churn "$churn" --seed 1; then exit 0; else exit $?; fi) >"$1.run" 2>&1 ||
      status=$?
    cat "$1.run" >>"$1"
    if ((status)); then
      detail="$m/$coh/$lock"
      if ((status == 124)); then
        detail+=" (timeout)"
      elif grep -q '^result: ' "$1.run"; then # what the failing run counted
        detail+=" (lost writes $(sed -n 's/^lost writes *//p' "$1.run"), violations $(sed -n 's/^violations *//p' "$1.run"), audit problems $(sed -n 's/^audit problems *//p' "$1.run"))"
      else
        detail+=" (exit status $status, no result line)"
      fi
      return 1
    fi
  done
  rm -f "$1.run"
}
catch_fuzz() { # TARGET LOG
  local status=0
  rm -rf "$src/fuzz-out/$1"
  (cd "$src" && timeout $((fuzz_seconds + 900)) scripts/fuzz.sh "$1" "$fuzz_seconds" --build "$build") >"$2" 2>&1 ||
    status=$?
  ((status)) || return 0
  ((status != 2)) || { tail -20 "$2" >&2; bad "scripts/fuzz.sh $1 failed to run (log above)"; }
  detail=$(sed -n 's/^fuzz [a-z]*: FOUND \([a-z-]*\):.*/\1/p' "$2" | head -1)
  ((status != 124)) || detail="timeout"
  detail=${detail:-exit status $status}
  return 1
}
catch_schedule() { catch_fuzz schedule "$1"; }
catch_ops() { catch_fuzz ops "$1"; }
catchers=(corpus unit soft schedule ops)
catcher_label() {
  case $1 in
  corpus) echo "corpus replay" ;; unit) echo "MMU unit tests" ;; soft) echo "vmm soft" ;;
  schedule) echo "schedule fuzzer" ;; ops) echo "ops fuzzer" ;;
  esac
}

if ((baseline)); then
  # Not the fuzzers: a run of them unmutated proves little in N seconds.
  for k in corpus unit soft; do
    t0=$(now_us)
    : >"$logs/baseline-$k.log"
    if ! "catch_$k" "$logs/baseline-$k.log"; then
      tail -30 "$logs/baseline-$k.log" >&2
      echo "mutation-check.sh: the unmutated tree fails the $(catcher_label "$k") ($detail; log $logs/baseline-$k.log): every mutation would look caught" >&2
      exit 1
    fi
    say "unmutated: $(catcher_label "$k") pass ($(secs_since "$t0") s)"
  done
fi

R_CATCHER=() R_DETAIL=() R_SECS=() R_LADDER=() R_BUILD=()
for i in "${selected[@]}"; do
  name=${M_NAME[i]}
  say "== $name (${M_FILE[i]})"
  apply "$i"
  t0=$(now_us)
  if ! build_full "$logs/build-$name.log"; then
    tail -30 "$logs/build-$name.log" >&2
    bad "mutation $name does not compile (log above)"
  fi
  R_BUILD[i]=$(secs_since "$t0")
  R_CATCHER[i]="" R_DETAIL[i]="" R_SECS[i]=""
  ladder=$(now_us)
  for k in "${catchers[@]}"; do
    t0=$(now_us)
    log=$logs/$name-$k.log
    : >"$log"
    detail=""
    if "catch_$k" "$log"; then
      say "   $(catcher_label "$k"): passed ($(secs_since "$t0") s)"
    else
      R_CATCHER[i]=$k R_DETAIL[i]=$detail R_SECS[i]=$(secs_since "$t0")
      say "   $(catcher_label "$k"): CAUGHT in ${R_SECS[i]} s: $detail (log $log)"
      break
    fi
  done
  R_LADDER[i]=$(secs_since "$ladder")
  [[ -n ${R_CATCHER[i]} ]] || say "   not caught (${R_LADDER[i]} s of catchers)"
  restore
done

source "$root/scripts/mutation/results.sh"
