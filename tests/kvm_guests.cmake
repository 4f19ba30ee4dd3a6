# Included from tests/CMakeLists.txt (hv_check_test, VMM, HV_GUEST_DIR and
# HV_FIXTURES come from there): guests booted under KVM on the bare and PC
# platforms, and the CLI's own answers.
# Guests booted under KVM.
hv_check_test(kvm.hello kvm --needs-kvm --status 0 --expect "Hello"
  -- ${VMM} run --timeout 60 ${HV_GUEST_DIR}/hello.elf)
hv_check_test(kvm.hello-stats kvm --needs-kvm --status 0 --expect "Hello"
  --expect "first guest output +[0-9.]+ ms" --expect "total run time" --expect "vmm peak rss +[0-9]+ KiB"
  --expect "io +[0-9]+"
  -- ${VMM} run --stats --timeout 60 ${HV_GUEST_DIR}/hello.elf)
hv_check_test(kvm.hello-serial-file kvm --needs-kvm --status 0 --reject "Hello"
  -- sh -c "${VMM} run --timeout 60 --serial ${HV_FIXTURES}/serial.out ${HV_GUEST_DIR}/hello.elf && grep -q Hello ${HV_FIXTURES}/serial.out")
hv_check_test(kvm.smp-4 kvm --needs-kvm --status 0 --expect "all 4 vCPUs checked in"
  -- ${VMM} run --cpus 4 --timeout 120 ${HV_GUEST_DIR}/smp.elf)
hv_check_test(kvm.smp-64 kvm --needs-kvm --status 0 --expect "all 64 vCPUs checked in"
  -- ${VMM} run --cpus 64 --timeout 300 ${HV_GUEST_DIR}/smp.elf TIMEOUT 400)
hv_check_test(kvm.smp-1024 kvm --needs-kvm --status 0 --expect "all 1024 vCPUs checked in"
  -- ${VMM} run --cpus 1024 --stats --timeout 400 ${HV_GUEST_DIR}/smp.elf TIMEOUT 500)
hv_check_test(kvm.faults kvm --needs-kvm --status 0
  --expect "guest exception #UD \\(vector 6\\)" --expect "guest exception #GP \\(vector 13\\)"
  --expect "guest exception #PF \\(vector 14\\).*cr2=0x8000000000" --expect "faults: all 3 reported"
  -- ${VMM} run --timeout 60 ${HV_GUEST_DIR}/faults.elf)
hv_check_test(kvm.faults-unhandled kvm --needs-kvm --status 126
  --expect "guest crash on vcpu 0: unhandled guest exception #PF" --expect "rip +[0-9a-f]{16}"
  --expect "cr3 +0000000000002000" --expect "code at rip \\(64-bit\\):" --expect "=> "
  -- ${VMM} run --timeout 60 --cmdline unhandled ${HV_GUEST_DIR}/faults.elf)
hv_check_test(kvm.faults-triple kvm --needs-kvm --status 126
  --expect "triple fault \\(KVM_EXIT_SHUTDOWN\\)" --expect "rflags" --expect "efer"
  --expect "=> .*ud2|reset the vCPU"
  -- ${VMM} run --timeout 60 --cmdline triple ${HV_GUEST_DIR}/faults.elf)
hv_check_test(kvm.faults-wild-hypercall kvm --needs-kvm --status 0 --expect "wild-hypercall: all [0-9]+ checks passed"
  -- ${VMM} run --timeout 60 --cmdline wild-hypercall ${HV_GUEST_DIR}/faults.elf)
hv_check_test(kvm.faults-bad-stack kvm --needs-kvm --status 126 --expect "unhandled guest exception #DF \\(vector 8\\)"
  --reject "triple fault" -- ${VMM} run --timeout 60 --cmdline bad-stack ${HV_GUEST_DIR}/faults.elf)
hv_check_test(kvm.faults-wild-rip kvm --needs-kvm --status 126 --expect "not readable"
  -- ${VMM} run --timeout 60 --cmdline wild-rip ${HV_GUEST_DIR}/faults.elf)
hv_check_test(kvm.timeout kvm --needs-kvm --status 124 --expect "timeout: the guest ran longer than --timeout"
  --expect "vcpu 0 at the timeout: rip=0x200000 rsp=0x[0-9a-f]+ last exit none"
  --expect "vcpu 1 at the timeout: rip=0x200000 rsp=0x[0-9a-f]+ last exit none"
  -- ${VMM} run --timeout 1 --cpus 2 ${CMAKE_CURRENT_BINARY_DIR}/tiny_spin.elf)
# HLT: on the bare platform it leaves KVM and the VMM counts halted vCPUs;
# on the PC platform it stays in KVM (the local APIC can wake the vCPU) and
# the halt watch finds a VM nothing can wake.
hv_check_test(kvm.all-halted kvm --needs-kvm --status 0 --expect "all vCPUs halted with interrupts off$"
  -- ${VMM} run --timeout 60 --cpus 3 ${CMAKE_CURRENT_BINARY_DIR}/tiny_ok.elf)
hv_check_test(kvm.all-halted-bare kvm --needs-kvm --status 0 --expect "all vCPUs halted with interrupts off$"
  -- ${VMM} run --platform bare --timeout 60 --cpus 3 ${CMAKE_CURRENT_BINARY_DIR}/tiny_ok.elf)
hv_check_test(kvm.all-halted-interrupts-on-bare kvm --needs-kvm --status 0
  --expect "all vCPUs halted \\(2 with interrupts on, but this VM has no interrupt source"
  -- ${VMM} run --platform bare --timeout 60 --cpus 2 ${CMAKE_CURRENT_BINARY_DIR}/tiny_sti_hlt.elf)
hv_check_test(kvm.halted-interrupts-on-waits kvm --needs-kvm --status 124
  --expect "vcpu 0 at the timeout: rip=0x[0-9a-f]+ rsp=0x[0-9a-f]+ last exit none \\(halted, interrupts on\\)"
  --reject "all vCPUs halted"
  -- ${VMM} run --timeout 2 --cpus 2 ${CMAKE_CURRENT_BINARY_DIR}/tiny_sti_hlt.elf)
hv_check_test(kvm.all-halted-never-started kvm --needs-kvm --status 0
  --expect "all vCPUs halted with interrupts off \\(2 never started: waiting for INIT/SIPI\\)"
  --expect "vcpus never started +2 \\(waiting for INIT/SIPI: vcpu 1-2\\)"
  -- ${VMM} run --timeout 60 --cpus 3 --stats ${CMAKE_CURRENT_BINARY_DIR}/tiny_multiboot_hlt.elf)
hv_check_test(kvm.timeout-never-started kvm --needs-kvm --status 124
  --expect "vcpu 1 at the timeout: waiting for INIT/SIPI \\(never started\\)"
  --expect "3 vCPUs never left wait-for-SIPI: vcpu 1-3"
  --expect "timeout on vcpu 0: where the vCPU was" --expect "=> 0+20000c +eb fe +jmp 0x20000c"
  -- ${VMM} run --timeout 1 --cpus 4 ${CMAKE_CURRENT_BINARY_DIR}/tiny_multiboot_spin.elf)
# --json: the run's result for scripts, also when the VMM fails before the guest starts.
hv_check_test(kvm.json-report kvm --needs-kvm --status 0
  --expect "\"image_kind\": \"elf64\"" --expect "\"platform\": \"pc\""
  --expect "\"end\": \\{\"reason\": \"debug-exit\", \"exit_status\": 0, .*\"guest_exit_code\": 0\\}"
  --expect "\"exits\": \\{\"total\": [1-9][0-9]*, \"io\": [1-9]" --expect "\"vmm_peak_rss_kib\": [1-9]"
  --expect "\"first_output_ms\": [0-9.]+,"
  -- sh -c "${VMM} run --timeout 60 --json ${HV_FIXTURES}/hello.json ${HV_GUEST_DIR}/hello.elf >/dev/null && cat ${HV_FIXTURES}/hello.json")
hv_check_test(bad.json-report-on-error "unit;kvm" --status 0
  --expect "\"reason\": \"vmm-error\", \"exit_status\": 125, \"message\": \"cannot open image '/nonexistent/guest.elf'"
  --expect "\"image_kind\": null"
  -- sh -c "${VMM} run --json ${HV_FIXTURES}/error.json /nonexistent/guest.elf; test $? = 125 && cat ${HV_FIXTURES}/error.json")
hv_check_test(bad.json-report-on-option-error "unit;kvm" --status 0
  --expect "\"reason\": \"vmm-error\", \"exit_status\": 125, \"message\": \"--platform: expected pc or bare, got 'isa'\""
  -- sh -c "${VMM} run --platform isa --json ${HV_FIXTURES}/option-error.json ${HV_GUEST_DIR}/hello.elf; test $? = 125 && cat ${HV_FIXTURES}/option-error.json")
# A value CLI11 itself refuses (before it stores any): --json still reports it.
hv_check_test(bad.json-report-on-parse-error "unit;kvm" --status 0
  --expect "\"reason\": \"vmm-error\", \"exit_status\": 125, \"message\": \"--cpus: Value x not in range"
  -- sh -c "${VMM} run --cpus x --json ${HV_FIXTURES}/parse-error.json ${HV_GUEST_DIR}/hello.elf; test $? = 125 && cat ${HV_FIXTURES}/parse-error.json")
hv_check_test(bad.json-unwritable "unit;kvm" --status 125 --expect "--json: cannot write '/nonexistent/dir/run.json'"
  -- ${VMM} run --json /nonexistent/dir/run.json ${CMAKE_CURRENT_BINARY_DIR}/tiny_ok.elf)
hv_check_test(kvm.unclaimed kvm --needs-kvm --status 0 --expect "faults: unclaimed: ok"
  --expect "port bus: unclaimed 1-byte write of 0x5a to 0x2f8" --reject "write of 0x5b"
  --expect "mmio bus: unclaimed 4-byte read from 0xd0000000"
  -- ${VMM} run --timeout 60 --cmdline unclaimed ${HV_GUEST_DIR}/faults.elf)
hv_check_test(kvm.strict-io kvm --needs-kvm --status 126 --expect "--strict-io: unclaimed port"
  -- ${VMM} run --timeout 60 --strict-io --cmdline unclaimed ${HV_GUEST_DIR}/faults.elf)
hv_check_test(bad.cpus-above-max "unit;kvm" --status 125 --expect "--cpus 5000 exceeds the VMM's maximum of 1024 vCPUs"
  -- ${VMM} run --cpus 5000 --mem 128M ${HV_GUEST_DIR}/hello.elf)
file(WRITE ${HV_FIXTURES}/module.txt "hv multiboot module: the guest hashes these bytes.\n")
file(READ ${HV_FIXTURES}/module.txt HV_MODULE_TEXT)
string(LENGTH "${HV_MODULE_TEXT}" HV_MODULE_BYTES)
# 32-bit FNV-1a of the module, computed here so the guest checks real contents.
set(HV_FNV 2166136261)
string(LENGTH "${HV_MODULE_TEXT}" _n)
math(EXPR _last "${_n} - 1")
foreach(i RANGE ${_last})
  string(SUBSTRING "${HV_MODULE_TEXT}" ${i} 1 _c)
  string(HEX "${_c}" _h)
  math(EXPR _b "0x${_h}")
  math(EXPR HV_FNV "((${HV_FNV} ^ ${_b}) * 16777619) & 0xffffffff")
endforeach()
math(EXPR HV_FNV_HEX "${HV_FNV}" OUTPUT_FORMAT HEXADECIMAL)
hv_check_test(kvm.multiboot kvm --needs-kvm --status 0 --expect "multiboot: cmdline ok, module ok"
  -- ${VMM} run --timeout 60 --initrd ${HV_FIXTURES}/module.txt
     --cmdline "module-bytes=${HV_MODULE_BYTES} module-fnv=${HV_FNV_HEX}" ${HV_GUEST_DIR}/multiboot.elf)
hv_check_test(kvm.multiboot-wrong-module kvm --needs-kvm --status 1 --expect "multiboot:"
  -- ${VMM} run --timeout 60 --initrd ${HV_FIXTURES}/module.txt
     --cmdline "module-bytes=${HV_MODULE_BYTES} module-fnv=0x12345678" ${HV_GUEST_DIR}/multiboot.elf)

hv_check_test(kvm.info kvm --needs-kvm --status 0 --expect "KVM API version +12" --expect "max vCPUs +[0-9]+"
  --expect "TDP paging +(yes|no) \\((kvm_amd npt=|kvm_intel ept=|kvm_pvm:)" --expect "yes KVM_CAP_SYNC_REGS"
  -- ${VMM} info)
hv_check_test(cli.help-run unit --status 0 --expect "--cpus" --expect "--mem" --expect "--initrd" --expect "--cmdline"
  --expect "--serial" --expect "--timeout" --expect "--stats" --expect "--strict-io" --expect "IMAGE"
  -- ${VMM} run --help)
hv_check_test(cli.help unit --status 0 --expect "run" --expect "info" -- ${VMM} --help)
hv_check_test(cli.no-subcommand unit --status 125 --expect "subcommand" -- ${VMM})
