#!/usr/bin/env bash
# The `nested` CTest test: when this machine has no usable /dev/kvm, boot a
# nested KVM host (scripts/nested-kvm.sh) and run every `kvm`-labelled test of
# BUILD_DIR inside it, where they must really run (HV_REQUIRE_KVM=1 turns a
# skip into a failure). With /dev/kvm present the `kvm` tests ran directly,
# so this test skips.
#   nested-ctest.sh BUILD_DIR [extra ctest args...]
set -euo pipefail
build=$(cd "${1:?usage: nested-ctest.sh BUILD_DIR}" && pwd)
shift
root=$(cd "$(dirname "$0")/.." && pwd)
if [[ -r /dev/kvm && -w /dev/kvm && ${HV_NESTED:-0} != 1 ]]; then
  echo "SKIPPED: /dev/kvm is usable here, so the kvm-labelled tests ran directly"
  exit 77
fi
export HV_REQUIRE_KVM=1
exec "$root/scripts/nested-kvm.sh" --cpus 2 --mem 3072 --timeout 1200 -- \
  ctest --test-dir "$build" -L kvm --output-on-failure --timeout 300 "$@"
