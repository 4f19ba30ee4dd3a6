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
# A sanitizer build adds memory of its own: ASan keeps up to 256 MiB of freed
# blocks in quarantine, and shadow for what it watches (the verify mode,
# whose freed 24 MiB copies stay in quarantine, peaked at 107652 KiB in the
# ASan+UBSan tree against 61016 in the normal one). There the bound is
# 320 MiB higher: it still catches memory that grows with what the guest does.
if(HV_SANITIZE OR HV_TSAN)
  math(EXPR HV_HOSTILE_MAX_RSS_KIB "${HV_HOSTILE_MAX_RSS_KIB} + 320 * 1024")
endif()
set(HV_HOSTILE ${HV_GUEST_DIR}/hostile.elf)

# Further arguments are more check-run.sh options.
function(hv_hostile_test mode paging expect)
  if(paging STREQUAL "shadow")
    set(needs --needs-tdp)
    set(labels "kvm;tdp")
    set(cost 4) # seconds in a nested host, as measured; the two slow modes below
    if(mode STREQUAL "exceptions")
      set(cost 12)
    elseif(mode STREQUAL "noack")
      set(cost 25)
    endif()
  else()
    set(needs --needs-kvm)
    set(labels kvm)
    set(cost 10)
  endif()
  hv_check_test(kvm.hostile.${paging}.${mode} "${labels}" ${needs} --status 126 --expect "${expect}"
    --reject "audit found|terminate called|vmm: error|Sanitizer"
    --max-output 65536 --max-rss-kib ${HV_HOSTILE_MAX_RSS_KIB} ${ARGN} TIMEOUT 150 COST ${cost}
    -- ${VMM} run --paging ${paging} --cpus 4 --mem 64M --stats --timeout 90 --cmdline ${mode} ${HV_HOSTILE})
endfunction()

# Overwritten tables wreck the guest's own translations (in shadow mode only
# the mirror in guest RAM: the MMU's own copy stays intact, which the audit
# at the end checks), so the guest dies of it, one way or another.
foreach(_how ones zeros self cross)
  hv_hostile_test(tables-${_how} shadow "guest crash on vcpu [0-9]+: ")
  hv_hostile_test(tables-${_how} identity "guest crash on vcpu [0-9]+: ")
endforeach()
# The exception reports of all vCPUs (40000) share one limit per VM: 8
# lines, then one count of the rest.
foreach(_paging shadow identity)
  hv_hostile_test(exceptions ${_paging} "triple fault \\(KVM_EXIT_SHUTDOWN\\)"
    --expect "vmm: \\.\\.\\. and 39992 more guest exception reports \\(suppressed\\)")
endforeach()
# Every stamp of the largest VERIFY is valid and true: a call that gets
# through compares all 2^20 and finds nothing lost; calls made while one
# runs are answered BUSY, and vCPU 0's last call, made alone, gets through.
# Identity mode answers every call NOT_SHADOW.
hv_hostile_test(verify shadow "triple fault \\(KVM_EXIT_SHUTDOWN\\)"
  --expect "5 verify calls of 1048576 stamps \\(one from each vCPU at once, then one from vCPU 0\\): [2-5] answered \\(checked [1-9][0-9]*, lost 0\\), [0-3] busy, 0 other")
hv_hostile_test(verify identity "triple fault \\(KVM_EXIT_SHUTDOWN\\)"
  --expect "5 verify calls of 1048576 stamps \\(one from each vCPU at once, then one from vCPU 0\\): 0 answered \\(checked 0, lost 0\\), 0 busy, 5 other")
foreach(_mode cr3-own hypercalls)
  hv_hostile_test(${_mode} shadow "triple fault \\(KVM_EXIT_SHUTDOWN\\)")
  hv_hostile_test(${_mode} identity "triple fault \\(KVM_EXIT_SHUTDOWN\\)")
endforeach()
foreach(_mode slots shootdown-triple)
  hv_hostile_test(${_mode} shadow "triple fault \\(KVM_EXIT_SHUTDOWN\\)")
endforeach()
hv_hostile_test(noack shadow "vcpu 1 did not acknowledge TLB shootdown [0-9]+ within 20000 ms")

# The bound above holds for a normal run of the same size.
hv_check_test(kvm.hostile.baseline "kvm;tdp" --needs-tdp --status 0 --max-rss-kib ${HV_HOSTILE_MAX_RSS_KIB}
  TIMEOUT 150 COST 2
  -- ${VMM} run --paging shadow --cpus 4 --mem 64M --stats --timeout 90 ${HV_GUEST_DIR}/touch.elf)
