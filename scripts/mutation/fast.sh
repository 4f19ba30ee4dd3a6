#!/usr/bin/env bash
# mutation-check.sh --fast: the small tree and the fast mutations.
# Sourced by scripts/mutation-check.sh at this point of its run (its
# variables and functions are this file's); split out to keep each file to
# one job.
# ---- --fast ------------------------------------------------------------------------
if ((fast)); then
  fbuild=$scratch/fast-build
  files=()
  for i in "${selected[@]}"; do
    [[ " ${files[*]} " == *" ${M_FAST[i]} "* ]] || files+=("${M_FAST[i]}")
  done
  tests_list=$(IFS=';'; echo "${files[*]}")
  t0=$(now_us)
  # A tree configured from another source directory (an older version of
  # this script configured from the checkout) cannot be reused.
  if [[ -f $fbuild/CMakeCache.txt ]] &&
    ! grep -qx "CMAKE_HOME_DIRECTORY:INTERNAL=$src/tests/mutations" "$fbuild/CMakeCache.txt"; then
    rm -rf "$fbuild"
  fi
  CC=${CC:-gcc} CXX=${CXX:-g++} cmake -S "$src/tests/mutations" -B "$fbuild" -G Ninja -DCMAKE_BUILD_TYPE= "-DHV_ROOT=$src" \
    -DCMAKE_CXX_FLAGS=-O1 "-DHV_MUTATION_TESTS=$tests_list" >"$logs/fast-configure.log" 2>&1 ||
    { cat "$logs/fast-configure.log" >&2; bad "cannot configure $fbuild (log above)"; }
  build_fast() { ninja -C "$fbuild" mutation_tests >"$1" 2>&1; }
  build_fast "$logs/fast-build.log" || { tail -30 "$logs/fast-build.log" >&2; bad "cannot build the unmutated mutation_tests (log above)"; }
  say "fast tree built in $(secs_since "$t0") s: MMU library + ${files[*]}"
  run_fast() { # FILE LOG
    timeout 600 "$fbuild/mutation_tests" "--source-file=*/$1" --abort-after=1 --no-colors=true >"$2" 2>&1
  }
  for f in "${files[@]}"; do
    run_fast "$f" "$logs/fast-baseline-$f.log" ||
      { tail -30 "$logs/fast-baseline-$f.log" >&2; echo "mutation-check.sh: the unmutated tests of $f fail (above): fix them first" >&2; exit 1; }
  done
  say "unmutated: the tests of ${files[*]} pass"
  missed=0
  for i in "${selected[@]}"; do
    apply "$i"
    t0=$(now_us)
    if ! build_fast "$logs/fast-build-${M_NAME[i]}.log"; then
      tail -30 "$logs/fast-build-${M_NAME[i]}.log" >&2
      bad "mutation ${M_NAME[i]} does not compile (log above)"
    fi
    b=$(secs_since "$t0")
    t0=$(now_us)
    log=$logs/fast-${M_NAME[i]}.log
    if run_fast "${M_FAST[i]}" "$log"; then
      say "NOT CAUGHT: ${M_NAME[i]}: the tests of ${M_FAST[i]} pass with it (build ${b} s, tests $(secs_since "$t0") s)"
      missed=1
    else
      tc=$(failed_case "$log")
      say "caught: ${M_NAME[i]} by ${M_FAST[i]}${tc:+: $tc} (build ${b} s, tests $(secs_since "$t0") s)"
    fi
    restore
  done
  say "fast check done in $(secs_since "$started") s"
  exit "$missed"
fi
