#!/usr/bin/env bash
# mutation-check.sh: reading and checking tests/mutations/mutations.txt, and
# choosing the mutations to check.
# Sourced by scripts/mutation-check.sh at this point of its run (its
# variables and functions are this file's); split out to keep each file to
# one job.
# ---- The mutations file ---------------------------------------------------------
M_NAME=() M_FILE=() M_KIND=() M_BREAKS=() M_FAST=() M_ORIG=() M_HASORIG=() M_REPL=() M_HASREPL=() M_AT=()
malformed() { echo "mutation-check.sh: $mutations_file:$1: $2" >&2; exit 2; }
check_block() { # index
  local i=$1 at=${M_AT[$1]} j
  [[ ${M_NAME[i]} =~ ^[a-z0-9][a-z0-9-]*$ ]] || malformed "$at" "expected a name of letters, digits and '-', found '${M_NAME[i]}'"
  for ((j = 0; j < i; j++)); do
    [[ ${M_NAME[j]} != "${M_NAME[i]}" ]] || malformed "$at" "mutation ${M_NAME[i]} is defined twice (also at line ${M_AT[j]})"
  done
  [[ -n ${M_FILE[i]} ]] || malformed "$at" "mutation ${M_NAME[i]} has no 'file:'"
  [[ ${M_FILE[i]} != /* && ${M_FILE[i]} != *..* ]] || malformed "$at" "mutation ${M_NAME[i]}: expected a file path inside the repository, found '${M_FILE[i]}'"
  [[ ${M_KIND[i]} =~ ^(swapped-step|missing-step|early-end|weakened-order)$ ]] ||
    malformed "$at" "mutation ${M_NAME[i]}: expected 'kind:' swapped-step, missing-step, early-end or weakened-order, found '${M_KIND[i]}'"
  [[ -n ${M_BREAKS[i]} ]] || malformed "$at" "mutation ${M_NAME[i]} has no 'breaks:' sentence"
  [[ -z ${M_FAST[i]} || ${M_FAST[i]} =~ ^test_[A-Za-z0-9_]+\.cpp$ ]] ||
    malformed "$at" "mutation ${M_NAME[i]}: expected 'fast:' a test file name of tests/unit/mmu (test_*.cpp), found '${M_FAST[i]}'"
  ((M_HASORIG[i])) || malformed "$at" "mutation ${M_NAME[i]} has no '-' line (the original line)"
  [[ -n ${M_ORIG[i]//[[:space:]]/} ]] || malformed "$at" "mutation ${M_NAME[i]}: the original line is blank"
  ((!M_HASREPL[i])) || [[ ${M_REPL[i]} != "${M_ORIG[i]}" ]] ||
    malformed "$at" "mutation ${M_NAME[i]}: the replacement is the original line"
}
parse_mutations() {
  [[ -f $mutations_file ]] || bad "no mutations file $mutations_file"
  local n=-1 lineno=0 line key value open=0
  while IFS= read -r line || [[ -n $line ]]; do
    lineno=$((lineno + 1))
    [[ $line == \#* ]] && continue
    if [[ -z $line ]]; then
      ((open)) && check_block "$n"
      open=0
      continue
    fi
    if ((!open)); then
      [[ $line == "mutation: "* ]] || malformed "$lineno" "expected 'mutation: NAME' to start a block, found '$line'"
      n=$((n + 1)) open=1
      M_NAME[n]=${line#mutation: } M_AT[n]=$lineno M_FILE[n]="" M_KIND[n]="" M_BREAKS[n]="" M_FAST[n]=""
      M_ORIG[n]="" M_HASORIG[n]=0 M_REPL[n]="" M_HASREPL[n]=0
      continue
    fi
    case $line in
    -*)
      ((!M_HASORIG[n])) || malformed "$lineno" "mutation ${M_NAME[n]} has a second '-' line (one line per mutation)"
      M_ORIG[n]=${line:1} M_HASORIG[n]=1 ;;
    +*)
      ((M_HASORIG[n])) || malformed "$lineno" "mutation ${M_NAME[n]}: the '+' line must follow the '-' line"
      ((!M_HASREPL[n])) || malformed "$lineno" "mutation ${M_NAME[n]} has a second '+' line (one line per mutation)"
      M_REPL[n]=${line:1} M_HASREPL[n]=1 ;;
    *": "*)
      ((!M_HASORIG[n])) || malformed "$lineno" "mutation ${M_NAME[n]}: fields go before the '-' line"
      key=${line%%: *} value=${line#*: }
      case $key in
      file) M_FILE[n]=$value ;;
      kind) M_KIND[n]=$value ;;
      breaks) M_BREAKS[n]=$value ;;
      fast) M_FAST[n]=$value ;;
      *) malformed "$lineno" "unknown field '$key' (expected file, kind, breaks or fast)" ;;
      esac ;;
    *) malformed "$lineno" "expected 'FIELD: VALUE', '-ORIGINAL' or '+REPLACEMENT', found '$line'" ;;
    esac
  done <"$mutations_file"
  ((open)) && check_block "$n"
  ((n >= 0)) || malformed "$lineno" "no mutation defined"
}
parse_mutations

if ((list)); then
  for i in "${!M_NAME[@]}"; do
    printf '%-34s %-15s %-28s %s\n' "${M_NAME[i]}" "${M_KIND[i]}" "${M_FILE[i]}" "${M_FAST[i]:+fast: ${M_FAST[i]}}"
  done
  exit 0
fi

# The mutations to check: --only's, in the file's order, else all (in
# --fast, those with a `fast:` file).
selected=()
for name in "${only[@]}"; do
  found=0
  for i in "${!M_NAME[@]}"; do [[ ${M_NAME[i]} == "$name" ]] && found=1; done
  ((found)) || bad "no mutation named '$name' in $mutations_file (scripts/mutation-check.sh --list shows them)"
done
for i in "${!M_NAME[@]}"; do
  if ((${#only[@]})); then
    [[ " ${only[*]} " == *" ${M_NAME[i]} "* ]] || continue
    ((!fast)) || [[ -n ${M_FAST[i]} ]] || bad "--fast: mutation ${M_NAME[i]} has no 'fast:' test file"
  elif ((fast)); then
    [[ -n ${M_FAST[i]} ]] || continue
  fi
  selected+=("$i")
done
((${#selected[@]})) || bad "no mutation to check"
