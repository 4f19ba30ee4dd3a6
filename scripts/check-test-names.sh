#!/usr/bin/env bash
# CTest splits doctest names at ';' and doctest treats '[' ']' as wildcards:
# such a name would register tests that match nothing. Fail early instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
if grep -rnE --include='*.cpp' 'TEST_CASE[_A-Z]*\("[^"]*[][;]' "$root"/tests/unit; then
  echo "test names above contain ';', '[' or ']': rename them" >&2
  exit 1
fi
echo "test names ok"
