#!/usr/bin/env bash
# Runs scripts/plot into a fresh output directory and checks what it left
# there; the driver of the plot.* and bad.plot-* CTest cases (run through
# tests/kvm/check-run.sh, which checks the exit status and the output).
#
#   check-plot.sh --count N OUTDIR [FILE.json...]
#
# OUTDIR is emptied first. Afterwards it must hold exactly N files, each a
# complete PNG (signature first, IEND chunk last) that scripts/plot printed
# on stdout, and scripts/plot must have printed nothing else there. When
# that holds the exit status is scripts/plot's own (0, or 2 for bad input,
# where N is 0: nothing may be left behind); otherwise it prints why and
# exits 1.
set -uo pipefail

count=''
if [[ ${1:-} == --count && $# -ge 3 ]]; then
  count=$2 outdir=$3
  shift 3
fi
if [[ ! $count =~ ^[0-9]+$ ]]; then
  echo "check-plot.sh: usage: check-plot.sh --count N OUTDIR [FILE.json...]" >&2
  exit 1
fi

plot="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/scripts/plot"
rm -rf -- "$outdir"
printed=$(mktemp)
trap 'rm -f "$printed"' EXIT
"$plot" -o "$outdir" "$@" >"$printed"
rc=$?
cat "$printed"

fail=0
files=()
if [[ -d $outdir ]]; then
  while IFS= read -r -d '' f; do files+=("$f"); done < <(find "$outdir" -mindepth 1 -print0 | sort -z)
fi
if ((${#files[@]} != count)); then
  echo "check-plot: FAIL: expected $count files in $outdir, found ${#files[@]}: ${files[*]}"
  fail=1
fi
for f in "${files[@]}"; do
  if [[ ! -f $f || ! -s $f ]]; then
    echo "check-plot: FAIL: $f is not a nonempty file"; fail=1; continue
  fi
  if [[ $(head -c 8 "$f" | od -An -tx1 | tr -d ' \n') != 89504e470d0a1a0a ]]; then
    echo "check-plot: FAIL: $f does not start with the PNG signature"; fail=1
  fi
  if [[ $(tail -c 8 "$f" | head -c 4) != IEND ]]; then
    echo "check-plot: FAIL: $f does not end with an IEND chunk (truncated?)"; fail=1
  fi
  if ! grep -qxF -- "$f" "$printed"; then
    echo "check-plot: FAIL: $f was written but not printed"; fail=1
  fi
done
while IFS= read -r line; do
  if [[ ! -f $line || $line != "$outdir"/* ]]; then
    echo "check-plot: FAIL: printed '$line', which is not a file in $outdir"; fail=1
  fi
done <"$printed"
((fail)) && exit 1
echo "check-plot: $count PNG files in $outdir, all printed and complete; scripts/plot exit status $rc"
exit "$rc"
