#!/usr/bin/env bash
# Configures and builds one tree. Usage: scripts/build.sh [DIR [CMAKE-ARGS...]]
# (default DIR: build). Environment CC/CXX pick the compiler as usual.
# This is the developers' (and CI's) build: warnings are errors
# (-DHV_WERROR=ON; a later -DHV_WERROR=OFF among CMAKE-ARGS wins). A plain
# `cmake` configure leaves them warnings.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-build}
shift || true
cd "$root"
cmake -S . -B "$dir" -G Ninja -DHV_WERROR=ON "$@" >/dev/null
ninja -C "$dir"
