#!/usr/bin/env bash
# Runs a PC test kernel (guest/pc/) under the host's QEMU in TCG mode, the
# second implementation of the PC that the images are checked against.
#
#   qemu-pc.sh [--timeout S] [--smp N] [--mem SIZE] [--append STR] IMAGE
#
# --smp N may carry QEMU's topology: 4,sockets=4 (QEMU 7.2 makes -smp N one
# socket of N cores, and SeaBIOS's MP table lists one CPU per socket).
# Defaults: --timeout 30, --smp 1, --mem 128M, --append "".
#
# The kernel ends by writing V to the isa-debug-exit port 0xf4, after which
# QEMU exits with (V << 1) | 1; this script exits with V. Any other QEMU
# status (0 after a guest reset or power-off, 1 for a QEMU error) is not a
# test result: exit 125 with a message. On the timeout (default 30 s) QEMU
# itself is killed and the exit status is 124. Bad arguments: exit 2.
# Without QEMU: "SKIPPED: ..." and exit 77 (CTest's skip code).
# QEMU_PC_QEMU overrides the QEMU binary (default qemu-system-x86_64).
set -uo pipefail

usage() {
  echo "usage: qemu-pc.sh [--timeout S] [--smp N[,sockets=N...]] [--mem SIZE] [--append STR] IMAGE" >&2
  exit 2
}
fail_arg() {
  echo "qemu-pc.sh: $*" >&2
  exit 2
}

timeout=30 smp=1 mem=128M append='' image=''
while (($#)); do
  case $1 in
    --timeout | --smp | --mem | --append)
      (($# >= 2)) || fail_arg "$1 needs a value"
      opt=${1#--} val=$2
      shift 2 ;;
    --timeout=* | --smp=* | --mem=* | --append=*)
      opt=${1%%=*} opt=${opt#--} val=${1#*=}
      shift ;;
    -h | --help) sed -n '2,/^set -uo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; (($# == 1)) || usage; image=$1; shift; continue ;;
    -*) fail_arg "unknown option '$1'" ;;
    *) [[ -z $image ]] || fail_arg "more than one IMAGE ('$image', '$1')"; image=$1; shift; continue ;;
  esac
  case $opt in
    timeout) [[ $val =~ ^[0-9]+([.][0-9]+)?$ && ! $val =~ ^0+([.]0+)?$ ]] || fail_arg "--timeout must be a positive number of seconds, got '$val'"; timeout=$val ;;
    smp) [[ $val =~ ^[1-9][0-9]*(,(sockets|cores|threads|maxcpus)=[1-9][0-9]*)*$ ]] ||
           fail_arg "--smp must be a CPU count, optionally with a topology (4,sockets=4), got '$val'"
         smp=$val ;;
    mem) [[ $val =~ ^[1-9][0-9]*[KMGkmg]?$ ]] || fail_arg "--mem must be a size like 128M, got '$val'"; mem=$val ;;
    append) append=$val ;;
  esac
done
[[ -n $image ]] || usage
[[ -f $image && -r $image ]] || fail_arg "IMAGE '$image' is not a readable file"

qemu=${QEMU_PC_QEMU:-qemu-system-x86_64}
if ! command -v "$qemu" >/dev/null; then
  echo "SKIPPED: '$qemu' is not installed"
  exit 77
fi

# QEMU's -m takes M by default and a suffix otherwise; keep the caller's.
args=(-accel tcg -M pc -nodefaults -display none -serial stdio
      -device isa-debug-exit,iobase=0xf4,iosize=4
      -smp "$smp" -m "$mem" -kernel "$image" -append "$append")

# Our own watchdog rather than coreutils' timeout, so that QEMU itself is
# killed; its sleep dies with it, and it holds none of our output open
# (ctest would wait for it). QEMU's stderr is kept to tell its own errors
# (exit status 1, like a guest's 0) from the guest's result.
work=$(mktemp -d "${TMPDIR:-/tmp}/qemu-pc.XXXXXX")
trap 'rm -rf "$work"' EXIT
"$qemu" "${args[@]}" </dev/null 2>"$work/stderr" &
qemu_pid=$!
(
  trap 'kill "$sleeper" 2>/dev/null; exit 0' TERM
  sleep "$timeout" &
  sleeper=$!
  wait "$sleeper"
  : >"$work/timeout"
  kill -KILL "$qemu_pid"
) >/dev/null 2>&1 &
watchdog=$!
trap 'kill -KILL "$qemu_pid" 2>/dev/null; kill "$watchdog" 2>/dev/null; exit 130' INT TERM
wait "$qemu_pid" 2>/dev/null # (no "Killed" job notice on a timeout)
rc=$?
kill -TERM "$watchdog" 2>/dev/null
wait "$watchdog" 2>/dev/null
cat "$work/stderr" >&2

name=${qemu##*/}
if [[ -e $work/timeout ]]; then
  echo "qemu-pc.sh: timeout: killed QEMU after ${timeout} s" >&2
  exit 124
fi
if ((rc == 1)) && grep -v ': warning: ' "$work/stderr" | grep -q "^$name: "; then
  echo "qemu-pc.sh: QEMU failed (exit status 1, see its message above)" >&2
  exit 125
fi
if ((rc % 2 == 1)); then
  exit $((rc >> 1))
fi
echo "qemu-pc.sh: QEMU exited with status $rc, not through the debug-exit port (a guest reset or power-off, or a QEMU error)" >&2
exit 125
