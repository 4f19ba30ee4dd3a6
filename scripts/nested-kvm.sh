#!/usr/bin/env bash
# nested-kvm.sh - run a command inside a QEMU (TCG) guest that has /dev/kvm.
#
# This machine has no /dev/kvm, so KVM tests run "nested": QEMU emulates an
# AMD EPYC with SVM+NPT, boots the host's own Debian kernel from a small
# busybox initramfs, loads kvm-amd and runs COMMAND there.  The guest mounts
# the host root filesystem read-only over virtio-9p and the project directory
# read-write at the same path, then chroots into it, so COMMAND runs with the
# host's own (dynamically linked) binaries in the caller's working directory.
#
# Data paths:
#   ttyS0 (kernel console + init messages) -> $tmp/console.log
#   ttyS1 (COMMAND's stdout+stderr, raw)   -> fifo -> cat -> our stdout (live)
#   The init prints HV-NESTED-EXIT=<status> on ttyS0 and powers off; we parse
#   it.  No marker means the guest failed (panic, module load, ...).
#
# The initramfs is two concatenated newc archives (the kernel accepts that):
# a cached base (busybox, modules, /init) and a tiny per-run one (/hv/*).
set -euo pipefail

readonly PROG=nested-kvm
# Exit codes of the runner itself (COMMAND's own status is passed through).
readonly EXIT_USAGE=2 EXIT_TIMEOUT=124 EXIT_RUNNER=125
# Caller variables passed into the guest when exported (plus all HV_*).
readonly PASS_VARS=(CTEST_OUTPUT_ON_FAILURE CTEST_PARALLEL_LEVEL VERBOSE
                    ASAN_OPTIONS UBSAN_OPTIONS LSAN_OPTIONS GTEST_FILTER)
# Modules to insmod in the guest.  Dependencies come from modules.dep and load
# first, giving: virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev
# virtio_pci 9pnet 9pnet_virtio netfs fscache 9p irqbypass kvm ccp kvm-amd.
readonly WANT_MODULES=(virtio_pci 9pnet_virtio 9p kvm-amd)
# 9p mount options (msize: larger messages make reads of big binaries faster).
# The guest adds cache=loose for the read-only host root (it does not change
# under us; page cache makes exec fast) and cache=mmap for the read-write
# project share (write-through, so nothing is lost at power-off, but mmap-able).
readonly P9_OPTS="trans=virtio,version=9p2000.L,msize=512000"

usage() {
    cat <<EOF
Usage: scripts/nested-kvm.sh [OPTIONS] -- COMMAND [ARGS...]

Run COMMAND inside a QEMU/TCG guest where /dev/kvm exists (nested KVM on an
emulated AMD EPYC with SVM+NPT).  The host root is visible read-only, the
project directory ($project_dir) read-write at the same path, and
/tmp, /run, /dev, /proc, /sys are the guest's own.  COMMAND runs as root in
the current directory with the host's binaries; its stdout+stderr stream to
stdout (stdin is /dev/null).  A path on COMMAND's line that the guest would
not see (under /tmp or /run outside the project, /dev/shm, /dev/pts, or a
file descriptor of this shell such as <(...)) is refused before anything
boots; outside the project the host's files are read-only there.

Options:
  --cpus N             guest vCPUs (default 2)
  --mem MiB            guest memory in MiB (default 2048)
  --timeout S          kill the guest after S seconds (default 600)
  --idle-timeout S     kill the guest when COMMAND has printed nothing for
                       S seconds (default 0: no limit); a hung guest kernel
                       cannot enforce COMMAND's own timeouts
  --keep-console FILE  copy the guest console log (ttyS0) to FILE
  --no-path-check      do not refuse COMMAND's words that name paths the
                       guest cannot see (e.g. a pattern that only looks
                       like a path)
  -h, --help           show this help

Exit status: COMMAND's status; 124 on either timeout; 125 if the runner or the
guest failed before COMMAND finished; 2 on usage errors.  On any non-zero
status the tail of the guest console is printed to stderr.

Environment:
  HV_NESTED_KERNEL     kernel image to boot (default: newest /boot/vmlinuz-*
                       that has /lib/modules/<version>)
  HV_NESTED_CACHE      initramfs cache dir (default ~/.cache/hv-nested)
  HV_NESTED_APPEND     extra guest kernel arguments (e.g. loglevel=7)
  HV_NESTED_CPU        QEMU -cpu model (default EPYC,+svm,+npt; e.g. max)
  HV_NESTED_TCG        single (default) or multi: QEMU's TCG on one host
                       thread, or one thread per guest CPU (about twice as
                       fast, but its SVM emulation then corrupts nested
                       guests: see below)
Inside the guest: HV_NESTED=1, HOME=/root, TERM=dumb, a standard PATH, and
the caller's HV_* and ${PASS_VARS[*]} if exported.
EOF
}

die() { echo "$PROG: $*" >&2; exit "$EXIT_RUNNER"; }
usage_error() {
    echo "$PROG: $*" >&2
    echo "Usage: scripts/nested-kvm.sh [--cpus N] [--mem MiB] [--timeout S] [--idle-timeout S] [--keep-console FILE] [--no-path-check] -- COMMAND [ARGS...]" >&2
    echo "Try 'scripts/nested-kvm.sh --help'." >&2
    exit "$EXIT_USAGE"
}

# Quote for POSIX sh (the guest init is busybox sh; bash's %q may emit $'..').
sh_quote() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

# True if $1 is an ELF file without a PT_INTERP program header, i.e. static.
# (Grepping for "ld-linux" is not enough: static busybox contains it too.)
elf_is_static() {
    local phoff phentsize phnum i type
    [[ $(od -An -c -N4 "$1" | tr -d ' ') == 177ELF ]] || return 1
    read -r phoff < <(od -An -tu8 -j32 -N8 "$1")
    read -r phentsize phnum < <(od -An -tu2 -j54 -N4 "$1")
    for ((i = 0; i < phnum; i++)); do
        read -r type < <(od -An -tu4 -j$((phoff + i * phentsize)) -N4 "$1")
        ((type != 3)) || return 1   # PT_INTERP
    done
}

script_path=$(readlink -f "${BASH_SOURCE[0]}")
project_dir=$(cd "$(dirname "$script_path")/.." && pwd -P)
nested_dir=$project_dir/scripts/nested # the parts this script sources, and the guest's PID 1
cwd=$(pwd -P)

# ---------------------------------------------------------------- arguments
cpus=2 mem=2048 timeout=600 idle_timeout=0 keep_console='' path_check=1
while (($#)); do
    case $1 in
        -h|--help) usage; exit 0 ;;
        --no-path-check) path_check=0; shift ;;
        --cpus|--mem|--timeout|--idle-timeout|--keep-console)
            (($# >= 2)) || usage_error "$1 needs a value"
            case $1 in
                --cpus) cpus=$2 ;;
                --mem) mem=$2 ;;
                --timeout) timeout=$2 ;;
                --idle-timeout) idle_timeout=$2 ;;
                --keep-console) keep_console=$2 ;;
            esac
            shift 2 ;;
        --cpus=*) cpus=${1#*=}; shift ;;
        --mem=*) mem=${1#*=}; shift ;;
        --timeout=*) timeout=${1#*=}; shift ;;
        --idle-timeout=*) idle_timeout=${1#*=}; shift ;;
        --keep-console=*) keep_console=${1#*=}; shift ;;
        --) shift; break ;;
        -*) usage_error "unknown option: $1" ;;
        *) break ;;  # first non-option word starts COMMAND
    esac
done
(($#)) || usage_error "no COMMAND given"
for v in cpus mem timeout; do
    [[ ${!v} =~ ^[1-9][0-9]{0,6}$ ]] || usage_error "--$v must be a positive integer, got '${!v}'"
done
[[ $idle_timeout =~ ^(0|[1-9][0-9]{0,6})$ ]] ||
    usage_error "--idle-timeout must be 0 or a positive integer, got '$idle_timeout'"
tcg_thread=${HV_NESTED_TCG:-single}
[[ $tcg_thread == single || $tcg_thread == multi ]] ||
    usage_error "HV_NESTED_TCG must be single or multi, got '$tcg_thread'"

source "$nested_dir/paths.sh"

# ------------------------------------------------------------ prerequisites
command -v qemu-system-x86_64 >/dev/null ||
    die "qemu-system-x86_64 not found (run scripts/setup.sh)"

if [[ -n ${HV_NESTED_KERNEL:-} ]]; then
    kernel=$HV_NESTED_KERNEL
    [[ -f $kernel ]] || die "HV_NESTED_KERNEL=$kernel does not exist"
    kver=${kernel##*/}; kver=${kver#vmlinuz-}
else
    # Newest kernel that has its modules installed.
    kernel='' kver=''
    while read -r k; do
        v=${k#/boot/vmlinuz-}
        if [[ -d /lib/modules/$v/kernel ]]; then kernel=$k kver=$v; fi
    done < <(compgen -G '/boot/vmlinuz-*' | sort -V)
    [[ -n $kernel ]] ||
        die "no /boot/vmlinuz-* with matching /lib/modules/<version> (run scripts/setup.sh)"
fi
[[ -r $kernel ]] || die "kernel $kernel is not readable by $(id -un)"
moddir=/lib/modules/$kver
[[ -f $moddir/modules.dep ]] ||
    die "no $moddir/modules.dep for kernel $kver (run scripts/setup.sh)"
grep -q '/kvm-amd\.ko' "$moddir/modules.dep" ||
    die "KVM modules (kvm-amd) missing in $moddir (run scripts/setup.sh)"

# The initramfs has no libc, so busybox must be the static build.
busybox=''
for b in /bin/busybox /usr/bin/busybox "$(command -v busybox || true)"; do
    if [[ -x $b ]] && elf_is_static "$b"; then busybox=$b; break; fi
done
[[ -n $busybox ]] || die "static busybox not found (install busybox-static; run scripts/setup.sh)"

# ------------------------------------------------------------ temp + traps
tmp=$(mktemp -d "${TMPDIR:-/tmp}/hv-nested.XXXXXX")
qemu_pid='' cat_pid='' timer_pid='' partial=''
# Stop QEMU: SIGTERM (it exits cleanly), SIGKILL if it is still there after
# 5s, and reap it so no zombie is left behind.
stop_qemu() {
    local i
    [[ -n $qemu_pid ]] || return 0
    {
        kill -TERM "$qemu_pid" || true
        for ((i = 0; i < 50; i++)); do kill -0 "$qemu_pid" || break; sleep 0.1; done
        kill -KILL "$qemu_pid" || true
        wait "$qemu_pid" || true
    } 2>/dev/null
    qemu_pid=''
}
# Forked children (cat, sleep, QEMU) run with our traps until they exec; a
# signal in that window must not make them clean up on our behalf.
main_pid=$BASHPID
# shellcheck disable=SC2317  # invoked via trap
cleanup() {
    local p
    [[ $BASHPID == "$main_pid" ]] || return 0
    # Normally everything has been reaped already; on errors or signals stop
    # QEMU, the timer and cat, and reap them (silently: no "Killed" notices).
    stop_qemu
    for p in "$timer_pid" "$cat_pid"; do
        [[ -z $p ]] || { kill -KILL "$p"; wait "$p"; } 2>/dev/null || true
    done
    rm -rf "$tmp"
    [[ -z $partial ]] || rm -f "$partial"
}
trap cleanup EXIT
# shellcheck disable=SC2317  # invoked via trap
on_signal() {
    [[ $BASHPID == "$main_pid" ]] || exit "$1"
    echo "$PROG: interrupted, killing QEMU" >&2
    exit "$1"   # the EXIT trap (cleanup) stops QEMU
}
trap 'on_signal 130' INT
trap 'on_signal 143' TERM
trap 'on_signal 129' HUP

source "$nested_dir/initramfs.sh"

# ------------------------------------------------------------ per-run data
mkdir -p "$tmp/run/hv"
{
    echo "HV_PROJECT=$(sh_quote "$project_dir")"
    echo "HV_BASH=$(sh_quote "$BASH")"
    echo "HV_P9_OPTS=$(sh_quote "$P9_OPTS")"
    echo "HV_DUMP_AFTER=$(( timeout > 120 ? timeout - 45 : timeout * 2 / 3 ))"
} > "$tmp/run/hv/config"
{
    # Run by the host's bash inside the chroot, so bash's %q quoting is fine.
    printf 'cd -- %q || exit %d\n' "$cwd" "$EXIT_RUNNER"
    echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
    echo 'export HOME=/root TERM=dumb'
    for v in "${PASS_VARS[@]}" $(compgen -v HV_ || true); do
        [[ $v != HV_NESTED && -v $v && ${!v@a} == *x* ]] || continue   # exported only
        printf 'export %s=%q\n' "$v" "${!v}"
    done
    echo 'export HV_NESTED=1'
    printf 'exec'; printf ' %q' "$@"; printf '\n'
} > "$tmp/run/hv/run.sh"
(cd "$tmp/run" && find . -mindepth 1 | LC_ALL=C sort |
    "$busybox" cpio -o -H newc 2>/dev/null) > "$tmp/run.cpio"
cat "$base_cpio" "$tmp/run.cpio" > "$tmp/initrd.cpio"

# ------------------------------------------------------------ run QEMU
console=$tmp/console.log
: > "$console"   # exists even if QEMU fails before creating it
mkfifo "$tmp/out.fifo"
# cat copies COMMAND's output to our stdout.  QEMU never gets our stdio, so
# it cannot set O_NONBLOCK on a pipe or terminal we share with the caller.
# No open() may block, whatever order things start or die in: we open the
# FIFO read-write first (never blocks on Linux), then a read end for cat.
# cat sees EOF once QEMU has exited and we have closed our write end.
# If our stdout goes away (e.g. "| head"), keep draining the FIFO so QEMU
# never blocks writing to it and the guest still finishes.
exec {fifo_fd}<>"$tmp/out.fifo"
exec {cat_fd}<"$tmp/out.fifo"
# tee -p keeps writing the copy in out.log (the idle watchdog's measure)
# when our stdout breaks.
{ tee -p "$tmp/out.log" || exec cat >/dev/null; } <&"$cat_fd" {cat_fd}<&- {fifo_fd}>&- &
cat_pid=$!
exec {cat_fd}<&-

# Single-threaded TCG by default. With one host thread per emulated CPU
# (QEMU 7.2's default for x86 on x86), guests of the nested KVM triple-faulted
# with nothing of ours involved: 1024-vCPU identity-mode runs, 7 of 7 within
# 30 s; L1 KVM's trace at the shutdown shows a not-present #PF fetching the
# instruction right after a port-I/O exit, on a page the vCPU had just run
# from, under page tables nobody writes. 4-vCPU shadow-mode runs did so about
# once in 100-150, and the L1 kernel hung about once in 150-400. With
# thread=single the same 1024-vCPU runs passed (identity 3 of 3, shadow
# coherence with churn 2 of 2). README, "Nested KVM".
# nokaslr: fixed kernel addresses, so the timeout dump can be looked up.
# transparent_hugepage=never: khugepaged collapsing a VMM's memory while 64
# nested vCPUs ran locked up an L1 CPU for minutes (a soft lockup on the console).
# shellcheck disable=SC2054  # commas are QEMU option syntax
qemu_args=(
    -accel "tcg,thread=$tcg_thread" -cpu "${HV_NESTED_CPU:-EPYC,+svm,+npt}" -smp "$cpus" -m "$mem"
    -nodefaults -display none -no-reboot
    -kernel "$kernel" -initrd "$tmp/initrd.cpio"
    -append "console=ttyS0 panic=-1 rdinit=/init quiet nokaslr transparent_hugepage=never ${HV_NESTED_APPEND:-}"
    -chardev "file,id=con0,path=$console" -serial chardev:con0
    -chardev "file,id=out0,path=$tmp/out.fifo" -serial chardev:out0
    # Monitor on two FIFOs (QEMU opens both read-write): on a timeout we ask
    # it where each virtual CPU is, which shows a hang even when the guest
    # kernel is too stuck to report it.
    -chardev "pipe,id=mon0,path=$tmp/mon" -mon chardev=mon0,mode=readline
    # multidevs=remap: the host root spans several filesystems; avoid inode clashes.
    -fsdev "local,id=fsroot,path=/,security_model=none,readonly=on,multidevs=remap"
    -device virtio-9p-pci,fsdev=fsroot,mount_tag=hostroot
    -fsdev "local,id=fsproj,path=$project_dir,security_model=none,multidevs=remap"
    -device virtio-9p-pci,fsdev=fsproj,mount_tag=project
)
mkfifo "$tmp/mon.in" "$tmp/mon.out"
start=$SECONDS
qemu-system-x86_64 "${qemu_args[@]}" </dev/null >"$tmp/qemu.err" 2>&1 {fifo_fd}>&- &
qemu_pid=$!
# The timer: returns after --timeout seconds, or once COMMAND's output has
# not grown for --idle-timeout seconds (it says which in $tmp/why). It must
# not hold our stdout open (a caller piping us would hang).
watch_time() {
    local t=0 idle=0 size last=-1
    while ((t < timeout)); do
        sleep 1; ((t += 1))
        ((idle_timeout)) || continue
        size=$(stat -c %s "$tmp/out.log" 2>/dev/null || echo 0)
        if ((size == last)); then ((idle += 1)); else idle=0 last=$size; fi
        if ((idle >= idle_timeout)); then echo idle > "$tmp/why"; return; fi
    done
    echo total > "$tmp/why"
}
watch_time >/dev/null 2>&1 {fifo_fd}>&- &
timer_pid=$!

qemu_rc=0 who=''
wait -n -p who "$qemu_pid" "$timer_pid" || qemu_rc=$?
timed_out=0
if [[ $who == "$timer_pid" ]]; then
    timed_out=1
    timer_pid=''
    # Where the virtual CPUs are (kernel or nested guest addresses), then stop.
    { timeout 4 cat "$tmp/mon.out" > "$tmp/cpus.txt" & } 2>/dev/null
    reader=$!
    {
        for ((c = 0; c < cpus; c++)); do
            printf 'cpu %d\ninfo registers\nx/48gx $esp\n' "$c"
        done
    } > "$tmp/mon.in" || true
    wait "$reader" 2>/dev/null || true
    stop_qemu
else
    qemu_pid=''
    # SIGKILL: a just-forked child can lose a catchable signal before exec.
    { kill -KILL "$timer_pid"; wait "$timer_pid"; } 2>/dev/null || true
    timer_pid=''
fi
exec {fifo_fd}>&-
wait "$cat_pid" 2>/dev/null || true   # flush the rest of COMMAND's output
cat_pid=''
elapsed=$((SECONDS - start))

if [[ -n $keep_console ]]; then
    cp "$console" "$keep_console" || echo "$PROG: cannot write $keep_console" >&2
fi

show_console() {
    echo "$PROG: $1" >&2
    if grep -q 'HV-NESTED-WATCHDOG' "$console"; then
        # The watchdog's task and backtrace dump, from its marker on.
        echo "----- guest console (from the watchdog's dump on) -----" >&2
        tr -d '\r' < "$console" | sed -n '/HV-NESTED-WATCHDOG/,$p' | head -n 600 >&2
    else
        echo "----- guest console (last 100 lines) -----" >&2
        tr -d '\r' < "$console" | tail -n 100 >&2
    fi
    if [[ -s $tmp/cpus.txt ]]; then
        echo "----- virtual CPUs at the timeout (QEMU monitor) -----" >&2
        # Registers, and the top of each stack (return addresses to look up
        # in the guest's /proc/kallsyms; the kernel runs with nokaslr). HMP's
        # $esp is the whole RSP on x86-64.
        tr -d '\r' < "$tmp/cpus.txt" | grep -E '^(RAX|RSI|RIP|CS |CR0|EFER|[0-9a-f]{16}:)' >&2 || true
    fi
    # Skip TCG's harmless "doesn't support requested feature" noise for EPYC.
    if grep -v "TCG doesn't support requested feature" "$tmp/qemu.err" > "$tmp/qemu.err2"; then
        echo "----- qemu stderr -----" >&2
        tail -n 20 "$tmp/qemu.err2" >&2
    fi
    echo "------------------------------------------" >&2
}

# Lenient match: a kernel message could share the line with the marker.
marker=$(tr -d '\r' < "$console" | sed -n 's/.*HV-NESTED-EXIT=\([0-9][0-9]*\).*/\1/p' | tail -n 1)
if ((timed_out)) && [[ -n $marker ]]; then
    timed_out=0   # COMMAND had finished; QEMU was only slow to power off
fi
if ((timed_out)); then
    if [[ $(cat "$tmp/why" 2>/dev/null) == idle ]]; then
        show_console "COMMAND printed nothing for ${idle_timeout}s (after ${elapsed}s): the guest looks hung, QEMU killed"
    else
        show_console "timed out after ${timeout}s, QEMU killed"
    fi
    exit "$EXIT_TIMEOUT"
elif [[ -z $marker ]]; then
    reason=$(tr -d '\r' < "$console" | sed -n 's/.*HV-NESTED-ERROR: //p' | tail -n 1)
    if [[ -z $reason ]] && grep -q 'Kernel panic' "$console"; then reason="guest kernel panic"; fi
    show_console "guest failed before COMMAND finished (${reason:-no exit marker, QEMU exit status $qemu_rc}) after ${elapsed}s"
    exit "$EXIT_RUNNER"
elif ((marker != 0)); then
    show_console "COMMAND exited with status $marker after ${elapsed}s"
fi
exit "$marker"
