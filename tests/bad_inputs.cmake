# Bad inputs of issue 19 (included from tests/CMakeLists.txt): files of the
# wrong kind, FIFOs that would block an open, numbers outside their range or
# syntax, and output that cannot be written. The FIFO tests have a short
# TIMEOUT: a regression that blocks in open() fails instead of hanging.
set(HV_BAD_FIFOS ${HV_FIXTURES}/fifos)
file(MAKE_DIRECTORY ${HV_BAD_FIFOS})

# IMAGE and --initrd: regular files only; a FIFO is refused at once.
hv_check_test(bad.image-fifo "unit;kvm" TIMEOUT 20 --status 125
  --expect "vmm: error: image '.*/image.fifo' is not a regular file: expected a regular file, found a FIFO"
  -- sh -c "rm -f ${HV_BAD_FIFOS}/image.fifo && mkfifo ${HV_BAD_FIFOS}/image.fifo && exec ${VMM} run ${HV_BAD_FIFOS}/image.fifo")
hv_check_test(bad.initrd-fifo "unit;kvm" TIMEOUT 20 --status 125
  --expect "vmm: error: --initrd '.*/initrd.fifo' is not a regular file: expected a regular file, found a FIFO"
  -- sh -c "rm -f ${HV_BAD_FIFOS}/initrd.fifo && mkfifo ${HV_BAD_FIFOS}/initrd.fifo && exec ${VMM} run --initrd ${HV_BAD_FIFOS}/initrd.fifo ${HV_GUEST_DIR}/multiboot.elf")

# --serial: a FIFO nothing reads is refused (never waited on); a directory is not an output.
hv_check_test(bad.serial-fifo-no-reader "unit;kvm" TIMEOUT 20 --status 125
  --expect "vmm: error: --serial '.*/serial.fifo' is a FIFO that no process has open for reading \\(expected a reader already there: vmm does not wait for one\\); start the reader first"
  -- sh -c "rm -f ${HV_BAD_FIFOS}/serial.fifo && mkfifo ${HV_BAD_FIFOS}/serial.fifo && exec ${VMM} run --serial ${HV_BAD_FIFOS}/serial.fifo ${T}/tiny_ok.elf")
hv_check_test(bad.serial-directory "unit;kvm" --status 125
  --expect "vmm: error: --serial '.*' is not usable as output: expected a regular file, a character device or a FIFO with a reader, found a directory"
  -- ${VMM} run --serial ${HV_FIXTURES} ${T}/tiny_ok.elf)
# A FIFO with a reader (here the shell's own read-write descriptor) and a character device are fine.
hv_check_test(kvm.serial-fifo-with-reader kvm --needs-kvm TIMEOUT 60 --status 0 --expect "^Hello"
  -- sh -c "rm -f ${HV_BAD_FIFOS}/reader.fifo && mkfifo ${HV_BAD_FIFOS}/reader.fifo && exec 3<>${HV_BAD_FIFOS}/reader.fifo && ${VMM} run --timeout 30 --serial ${HV_BAD_FIFOS}/reader.fifo ${HV_GUEST_DIR}/hello.elf >/dev/null && { timeout 1 cat <&3; true; }")
hv_check_test(kvm.serial-dev-null kvm --needs-kvm --status 0 --reject "Hello"
  -- ${VMM} run --timeout 60 --serial /dev/null ${HV_GUEST_DIR}/hello.elf)

# --json of `run` is renamed over its path: a FIFO is refused and left in place.
hv_check_test(bad.json-fifo "unit;kvm" TIMEOUT 20 --status 0
  --expect "vmm: error: --json '.*/run.json.fifo' is not a regular file: expected a regular file or a path that does not exist yet, found a FIFO"
  -- sh -c "rm -f ${HV_BAD_FIFOS}/run.json.fifo && mkfifo ${HV_BAD_FIFOS}/run.json.fifo && ${VMM} run --json ${HV_BAD_FIFOS}/run.json.fifo ${T}/tiny_ok.elf; test $? = 125 && test -p ${HV_BAD_FIFOS}/run.json.fifo")
# `soft --json` opens its file later: a FIFO nothing reads is refused before the run.
hv_check_test(bad.soft-json-fifo "unit;kvm" TIMEOUT 20 --status 125
  --expect "vmm: error: --json '.*/soft.json.fifo' is a FIFO that no process has open for reading"
  -- sh -c "rm -f ${HV_BAD_FIFOS}/soft.json.fifo && mkfifo ${HV_BAD_FIFOS}/soft.json.fifo && exec ${VMM} soft --vcpus 1 --ops 100 --json ${HV_BAD_FIFOS}/soft.json.fifo")

# --timeout: a finite decimal number of seconds, 0 (none) .. 1000000.
set(HV_TIMEOUT_RANGE "--timeout: expected a decimal number of seconds from 0 \\(no timeout\\) to 1000000")
foreach(bad inf 1e10 1e308 nan -1 0x10)
  hv_check_test(bad.timeout-${bad} "unit;kvm" --status 125 --expect "vmm: error: ${HV_TIMEOUT_RANGE}, got '${bad}'"
    -- ${VMM} run --timeout ${bad} ${T}/tiny_ok.elf)
endforeach()
# (Through sh: CMake drops an empty argument.)
hv_check_test(bad.timeout-empty "unit;kvm" --status 125 --expect "vmm: error: ${HV_TIMEOUT_RANGE}, got ''"
  -- sh -c "exec ${VMM} run --timeout '' ${T}/tiny_ok.elf")
hv_check_test(kvm.timeout-largest kvm --needs-kvm --status 0 --expect "Hello"
  -- ${VMM} run --timeout 1000000 ${HV_GUEST_DIR}/hello.elf)
hv_check_test(bad.fuzz-guest-timeout-nan "unit;kvm" --status 125
  --expect "vmm: error: --timeout: expected a decimal number of seconds, got 'nan'"
  -- ${VMM} fuzz-guest --timeout nan --input ${HV_FIXTURES})

# Write errors: the guest's output lost to a full device fails the run.
hv_check_test(bad.serial-dev-full kvm --needs-kvm --status 125
  --expect "vmm: error: cannot write the guest's serial output to --serial '/dev/full': No space left on device"
  -- ${VMM} run --timeout 60 --serial /dev/full ${HV_GUEST_DIR}/hello.elf)
hv_check_test(bad.stdout-dev-full kvm --needs-kvm --status 125
  --expect "vmm: error: cannot write the guest's serial output to stdout: No space left on device"
  -- sh -c "exec ${VMM} run --timeout 60 ${HV_GUEST_DIR}/hello.elf >/dev/full")
hv_check_test(bad.soft-stdout-dev-full "unit;kvm" --status 125
  --expect "vmm: error: cannot write to stdout: No space left on device"
  -- sh -c "exec ${VMM} soft --vcpus 1 --ops 100 >/dev/full")

# Numbers: decimal everywhere, messages that state the real value and range.
hv_check_test(bad.mem-4095k "unit;kvm" --status 125
  --expect "vmm: error: --mem 4095 KiB is too small; the minimum is 4 MiB"
  -- ${VMM} run --mem 4095K ${T}/tiny_ok.elf)
hv_check_test(bad.mem-above-max-exact "unit;kvm" --status 125
  --expect "vmm: error: --mem 67108868 KiB exceeds the maximum of 64 GiB"
  -- ${VMM} run --mem 67108868K ${T}/tiny_ok.elf)
hv_check_test(bad.mem-hex "unit;kvm" --status 125
  --expect "vmm: error: --mem: expected a size such as 64M, 2G or 4096 \\(decimal, with an optional K, M, G or T suffix\\), got '0x1000000'"
  -- ${VMM} run --mem 0x1000000 ${T}/tiny_ok.elf)
hv_check_test(bad.cpus-hex "unit;kvm" --status 125
  --expect "vmm: error: --cpus: Value 0x10 not in range 1 to 1024: expected a decimal whole number \\(see .vmm run --help.\\)$"
  -- ${VMM} run --cpus 0x10 ${T}/tiny_ok.elf)
hv_check_test(bad.cpus-huge "unit;kvm" --status 125
  --expect "vmm: error: --cpus 2000000 exceeds the VMM's maximum of 1024 vCPUs" --reject "1048576"
  -- ${VMM} run --cpus 2000000 ${T}/tiny_ok.elf)

# CLI11's own refusals carry the same prefix as every other error.
hv_check_test(bad.cli-unknown-flag-prefix "unit;kvm" --status 125
  --expect "^vmm: error: The following argument was not expected: --bogus \\(see 'vmm run --help'\\)$"
  -- ${VMM} run --bogus ${T}/tiny_ok.elf)
hv_check_test(bad.cli-bad-number-prefix "unit;kvm" --status 125
  --expect "^vmm: error: --cpus: Value x not in range 1 to 1024"
  -- ${VMM} run --cpus x ${T}/tiny_ok.elf)
hv_check_test(bad.cli-missing-argument-prefix "unit;kvm" --status 125
  --expect "^vmm: error: .*--cpus.*\\(see 'vmm run --help'\\)$"
  -- ${VMM} run ${T}/tiny_ok.elf --cpus)
hv_check_test(bad.cli-missing-image-prefix "unit;kvm" --status 125
  --expect "^vmm: error: IMAGE is required \\(see 'vmm run --help'\\)$"
  -- ${VMM} run)
