#!/usr/bin/env bash
# The `nested` CTest test: boot a nested KVM host (scripts/nested-kvm.sh) and
# run there the `kvm`-labelled tests of BUILD_DIR that could not run here,
# where they must really run (HV_REQUIRE_KVM=1 turns a skip into a failure):
#   no usable /dev/kvm          every `kvm` test
#   KVM without EPT/NPT         the `tdp` tests (shadow paging; e.g. kvm_pvm)
#   KVM with EPT/NPT            nothing: all ran directly, so this test skips
# HV_NESTED=1 forces the nested run of every `kvm` test.
#   nested-ctest.sh BUILD_DIR [extra ctest args...]
set -euo pipefail
build=$(cd "${1:?usage: nested-ctest.sh BUILD_DIR}" && pwd)
shift
root=$(cd "$(dirname "$0")/.." && pwd)
source "$root/scripts/kvm-probe.sh"
label=kvm
if [[ ${HV_NESTED:-0} != 1 ]] && kvm_usable; then
  if kvm_has_tdp; then
    echo "SKIPPED: /dev/kvm with EPT/NPT is usable here, so the kvm-labelled tests ran directly"
    exit 77
  fi
  echo "nested-ctest: KVM here has no EPT/NPT: running the shadow-paging (tdp) tests nested"
  label=tdp
fi
export HV_REQUIRE_KVM=1
exec "$root/scripts/nested-kvm.sh" --cpus 2 --mem 3072 --timeout 1500 -- \
  ctest --test-dir "$build" -L "$label" --output-on-failure --timeout 300 "$@"
