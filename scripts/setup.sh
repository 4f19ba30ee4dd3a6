#!/usr/bin/env bash
# Installs every Debian package the build, the tests and the nested KVM
# runner need. Idempotent: does nothing when all are present.
set -euo pipefail

packages=(
  # build
  cmake ninja-build g++ clang pkgconf
  linux-libc-dev libcapstone-dev libcli11-dev doctest-dev
  # sanitizer runtimes for clang
  libclang-rt-14-dev
  # nested KVM runner: QEMU (TCG), Debian's kernel with the KVM modules, busybox for the initramfs
  qemu-system-x86 linux-image-amd64 busybox-static cpio
  # scripts/plot: PNGs from `vmm bench` JSON, with Debian's /usr/bin/python3
  python3-matplotlib
)

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "setup: all ${#packages[@]} packages already installed"
  exit 0
fi

sudo=""
if [[ $(id -u) -ne 0 ]]; then
  command -v sudo >/dev/null || { echo "setup: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  sudo=sudo
fi
echo "setup: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "setup: done"
