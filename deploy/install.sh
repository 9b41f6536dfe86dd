#!/usr/bin/env bash
# Installs everything wrtci needs on a fresh Debian 12 machine: the system
# packages (PostgreSQL, QEMU, and what builds the virtual lab's disk image) and a virtualenv in
# .venv with wrtci and its test tools. Safe to run again: it only adds what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi

# The virtual lab's firmware (deploy/virtual-lab/build-firmware.sh): busybox and
# dropbear from Debian, a syslinux-booted disk image made without root (mtools,
# sfdisk, genext2fs), kernel modules resolved with kmod's depmod; ssh for the suite.
# chromium + chromium-driver: the browser tests of the web pages (Selenium drives them).
APT_PACKAGES=(postgresql qemu-system-x86 busybox-static cpio dropbear-bin syslinux
              syslinux-common mtools fdisk genext2fs kmod openssh-client net-tools
              chromium chromium-driver)
PYTHON=${PYTHON:-python3}
if ! "$PYTHON" -m venv --help >/dev/null 2>&1 || ! "$PYTHON" -m ensurepip --version >/dev/null 2>&1; then
    APT_PACKAGES+=(python3-venv)
fi

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "install.sh: apt packages: ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

# The virtual lab's build downloads the current Debian kernel package.
if ! apt-cache depends linux-image-cloud-amd64 2>/dev/null | grep -q "Depends: linux-image-[0-9]"; then
    $SUDO apt-get update -qq
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
echo "install.sh: ready (.venv/bin/wrtci, .venv/bin/wrtci-lab, .venv/bin/pytest)"
