#!/bin/busybox sh
# PID 1 of the nested-KVM guest: scripts/nested-kvm.sh copies it into the
# base initramfs.
# The archive has no /dev/console (creating device nodes needs root), so
# mount devtmpfs first and then attach stdio to the console (ttyS0).
/bin/busybox mount -t devtmpfs devtmpfs /dev
exec </dev/null >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys

# Markers for the host go through printk as well: the kernel writes console
# messages synchronously, whereas a plain write to the tty may still be
# buffered when poweroff -f cuts the power.  The echo is a fallback.
mark() { echo "<2>$*" > /dev/kmsg; echo "$*"; }
# Without the exit marker the host reports a runner failure (exit 125).
fail() { mark "HV-NESTED-ERROR: $*"; sync; poweroff -f; sleep 10; }

echo "hv-nested: loading modules"
while read -r m; do
    insmod "/lib/modules/$m" || fail "insmod $m failed"
done < /etc/hv-modules
[ -c /dev/kvm ] || fail "/dev/kvm did not appear after loading kvm-amd"
echo "hv-nested: kernel $(uname -r); loaded:" $(sed 's|.*/||; s|\.ko$||' /etc/hv-modules)

. /hv/config    # HV_PROJECT, HV_BASH, HV_P9_OPTS (per-run archive)
H=/host
mount_9p() {  # tag dir options; retry in case device probing lags behind
    i=0
    until mount -t 9p -o "$3" "$1" "$2"; do
        i=$((i + 1)); [ $i -lt 20 ] || fail "mount 9p $1 on $2 failed"
        sleep 0.1
    done
}
mkdir -p $H
mount_9p hostroot $H "$HV_P9_OPTS,cache=loose,ro"
mount -t devtmpfs devtmpfs $H/dev || fail "mount $H/dev"
mkdir -p $H/dev/pts $H/dev/shm
mount -t devpts devpts $H/dev/pts
mount -t tmpfs -o mode=1777 tmpfs $H/dev/shm
mount -t proc proc $H/proc || fail "mount $H/proc"
mount -t sysfs sysfs $H/sys || fail "mount $H/sys"
mount -t tmpfs -o mode=1777 tmpfs $H/tmp || fail "mount $H/tmp"
mount -t tmpfs -o mode=755 tmpfs $H/run || fail "mount $H/run"
# The project may live under /tmp or /run (now fresh tmpfs): recreate the path.
mkdir -p "$H$HV_PROJECT" 2>/dev/null
mount_9p project "$H$HV_PROJECT" "$HV_P9_OPTS,cache=mmap,rw"
mkdir -p $H/tmp/.hv-nested
cp /hv/run.sh $H/tmp/.hv-nested/run.sh || fail "cannot stage run.sh"

# COMMAND's output goes to ttyS1 in raw mode: no \n -> \r\n translation.
exec 3>/dev/ttyS1
stty -F /dev/ttyS1 raw -echo || fail "stty ttyS1"
echo "hv-nested: running /hv/run.sh:"
cat /hv/run.sh
# Watchdog: shortly before the host's timeout, dump blocked tasks and every
# CPU's backtrace to the console, so a hang leaves evidence of where it was.
( sleep "$HV_DUMP_AFTER"
  echo 1 > /proc/sys/kernel/sysrq; echo 8 > /proc/sys/kernel/printk
  mark "HV-NESTED-WATCHDOG: no exit after ${HV_DUMP_AFTER}s, dumping tasks"
  echo w > /proc/sysrq-trigger; echo l > /proc/sysrq-trigger
  echo t > /proc/sysrq-trigger ) &
env -i /bin/busybox chroot $H "$HV_BASH" /tmp/.hv-nested/run.sh </dev/null >&3 2>&3
rc=$?
# Closing the last fd of the tty waits until its output has been sent.
exec 3>&-
sync
umount "$H$HV_PROJECT" 2>/dev/null
mark "HV-NESTED-EXIT=$rc"
poweroff -f
