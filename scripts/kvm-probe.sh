# Sourced by the test drivers: what this host's KVM can do.
#   kvm_usable    /dev/kvm can be opened for reading and writing
#   kvm_has_tdp   KVM uses two-dimensional paging (kvm_intel ept / kvm_amd
#                 npt = Y), which `vmm run --paging shadow` needs; kvm_pvm and
#                 KVM with ept/npt off shadow the guest's tables themselves
kvm_usable() { [[ -r /dev/kvm && -w /dev/kvm ]]; }
# For a test driver: go on when /dev/kvm is usable; otherwise print SKIPPED
# and exit 77 (CTest's skip code), or FAILED and exit 1 under
# HV_REQUIRE_KVM=1 (the nested runner, where KVM must be there).
kvm_usable_or_skip() {
  kvm_usable && return 0
  if [[ ${HV_REQUIRE_KVM:-0} == 1 ]]; then echo "FAILED: /dev/kvm is not usable but HV_REQUIRE_KVM=1"; exit 1; fi
  echo "SKIPPED: /dev/kvm is not available on this host"
  exit 77
}
kvm_has_tdp() {
  local f v
  for f in /sys/module/kvm_intel/parameters/ept /sys/module/kvm_amd/parameters/npt; do
    [[ -r $f ]] || continue
    read -r v <"$f" || continue
    [[ $v == Y || $v == y || $v == 1 ]] && return 0
  done
  return 1
}
# A KVM on hardware virtualization (kvm_intel or kvm_amd), which runs any
# guest kernel; kvm_pvm runs only kernels built as PVM guests.
kvm_runs_stock_kernels() {
  [[ -d /sys/module/kvm_intel || -d /sys/module/kvm_amd ]]
}
