#!/usr/bin/env bash
# mutation-check.sh: the table and the JSON and Markdown results.
# Sourced by scripts/mutation-check.sh at this point of its run (its
# variables and functions are this file's); split out to keep each file to
# one job.
# ---- Results -------------------------------------------------------------------------
date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
mkdir -p "$out"
row_catcher() { # index -> the first catcher, or "not caught"
  local i=$1
  if [[ -n ${R_CATCHER[i]} ]]; then
    echo "$(catcher_label "${R_CATCHER[i]}")${R_DETAIL[i]:+: ${R_DETAIL[i]}}"
  else
    echo "not caught in ${R_LADDER[i]} s (fuzzers ${fuzz_seconds} s each)"
  fi
}
{
  echo "{"
  echo "  \"commit\": $(json_str "$commit"),"
  echo "  \"source\": $(json_str "$source"),"
  echo "  \"date\": $(json_str "$date"),"
  echo "  \"fuzz_seconds\": $fuzz_seconds,"
  echo "  \"soft_seconds\": $soft_seconds,"
  echo "  \"catchers\": [\"corpus\", \"unit\", \"soft\", \"schedule\", \"ops\"],"
  echo "  \"mutations\": ["
  sep=""
  for i in "${selected[@]}"; do
    printf '%s    {"name": %s, "file": %s, "kind": %s, "caught": %s, "catcher": %s, "detail": %s, "seconds": %s, "ladder_seconds": %s, "build_seconds": %s}' \
      "$sep" "$(json_str "${M_NAME[i]}")" "$(json_str "${M_FILE[i]}")" "$(json_str "${M_KIND[i]}")" \
      "$([[ -n ${R_CATCHER[i]} ]] && echo true || echo false)" \
      "$([[ -n ${R_CATCHER[i]} ]] && json_str "${R_CATCHER[i]}" || echo null)" "$(json_str "${R_DETAIL[i]}")" \
      "${R_SECS[i]:-null}" "${R_LADDER[i]}" "${R_BUILD[i]}"
    sep=$',\n'
  done
  printf '\n  ]\n}\n'
} >"$out/mutations.json"
{
  echo "| mutation | kind | first catcher | seconds (catcher) | seconds (all catchers run) |"
  echo "|---|---|---|---:|---:|"
  for i in "${selected[@]}"; do
    echo "| \`${M_NAME[i]}\` | ${M_KIND[i]} | $(md_cell "$(row_catcher "$i")") | ${R_SECS[i]:--} | ${R_LADDER[i]} |"
  done
  echo
  echo "Measured $date on $commit ($source sources), fuzzers ${fuzz_seconds} s, vmm soft ${soft_seconds} s a run."
} >"$out/mutations.md"

echo
printf '%-34s | %-60s | %s\n' mutation catcher seconds
for i in "${selected[@]}"; do
  printf '%-34s | %-60s | %s\n' "${M_NAME[i]}" "$(row_catcher "$i")" "${R_SECS[i]:--}"
done
say "results: $out/mutations.json, $out/mutations.md ($(secs_since "$started") s in all)"
