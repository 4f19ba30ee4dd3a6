# The hostile guest (guest/hostile.c): one attack on the VMM per mode. Each
# must end as a guest fault (exit 126) with its one-line reason, within the
# time limit, with at most 64 KiB of output and the VMM's peak RSS within
# HV_HOSTILE_MAX_RSS_KIB. Shadow mode runs where KVM has EPT/NPT (nested in
# CI, label tdp), identity mode directly.
#
# The RSS bound: guest RAM (64 MiB, all of it touched in the worst mode)
# plus 48 MiB for the VMM; a normal run of the same size (kvm.hostile.baseline)
# stays within it too, and the verify mode, whose calls each read 24 MiB of
# stamps, must not go beyond it.
set(HV_HOSTILE_MAX_RSS_KIB 114688)
set(HV_HOSTILE ${HV_GUEST_DIR}/hostile.elf)

function(hv_hostile_test mode paging expect)
  if(paging STREQUAL "shadow")
    set(needs --needs-tdp)
    set(labels "kvm;tdp")
    set(cost 40)
  else()
    set(needs --needs-kvm)
    set(labels kvm)
    set(cost 10)
  endif()
  hv_check_test(kvm.hostile.${paging}.${mode} "${labels}" ${needs} --status 126 --expect "${expect}"
    --reject "audit found|terminate called|vmm: error|Sanitizer"
    --max-output 65536 --max-rss-kib ${HV_HOSTILE_MAX_RSS_KIB} TIMEOUT 150 COST ${cost}
    -- ${VMM} run --paging ${paging} --cpus 4 --mem 64M --stats --timeout 90 --cmdline ${mode} ${HV_HOSTILE})
endfunction()

# Overwritten tables wreck the guest's own translations (in shadow mode only
# the mirror in guest RAM: the MMU's own copy stays intact, which the audit
# at the end checks), so the guest dies of it, one way or another.
foreach(_how ones zeros self cross)
  hv_hostile_test(tables-${_how} shadow "guest crash on vcpu [0-9]+: ")
  hv_hostile_test(tables-${_how} identity "guest crash on vcpu [0-9]+: ")
endforeach()
foreach(_mode cr3-own exceptions hypercalls verify)
  hv_hostile_test(${_mode} shadow "triple fault \\(KVM_EXIT_SHUTDOWN\\)")
  hv_hostile_test(${_mode} identity "triple fault \\(KVM_EXIT_SHUTDOWN\\)")
endforeach()
foreach(_mode slots shootdown-triple)
  hv_hostile_test(${_mode} shadow "triple fault \\(KVM_EXIT_SHUTDOWN\\)")
endforeach()
hv_hostile_test(noack shadow "vcpu 1 did not acknowledge TLB shootdown [0-9]+ within 20000 ms")

# The bound above holds for a normal run of the same size.
hv_check_test(kvm.hostile.baseline "kvm;tdp" --needs-tdp --status 0 --max-rss-kib ${HV_HOSTILE_MAX_RSS_KIB}
  TIMEOUT 150 COST 40
  -- ${VMM} run --paging shadow --cpus 4 --mem 64M --stats --timeout 90 ${HV_GUEST_DIR}/touch.elf)
