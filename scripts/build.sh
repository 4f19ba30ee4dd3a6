#!/usr/bin/env bash
# Configures and builds one tree. Usage: scripts/build.sh [DIR [CMAKE-ARGS...]]
# (default DIR: build). Environment CC/CXX pick the compiler as usual.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-build}
shift || true
cd "$root"
cmake -S . -B "$dir" -G Ninja "$@" >/dev/null
ninja -C "$dir"
