#!/usr/bin/env bash
# Build the "virtual lab" device: a Debian kernel (the fixed boot part of the
# device) plus an OpenWrt-lookalike firmware (a busybox initramfs) for QEMU.
#
# usage: build-firmware.sh OUT_DIR [VERSION] [REVISION]
#
# Needs (Debian 12): busybox-static cpio gzip, and apt to fetch the kernel
# package (qemu-system-x86 is only needed to boot the result).
#
# Writes to OUT_DIR:
#   vmlinuz                                                  the kernel
#   openwrt-VERSION-x86-64-generic-initramfs-rootfs.cpio.gz  the firmware
#   openwrt-VERSION-x86-64-generic-initramfs-rootfs.cpio.gz.sha256
# and prints the firmware's sha256. The same VERSION/REVISION (and the same
# busybox package) always give byte-identical firmware.
#
# Environment:
#   WRTCI_CACHE        cache root (default ~/.cache/wrtci); the kernel .deb and
#                      extracted vmlinuz live in $WRTCI_CACHE/virtual-lab
#   KERNEL_PACKAGE     Debian kernel package to use (default: what
#                      linux-image-amd64 depends on)
#   BUSYBOX            static busybox binary (default /bin/busybox from
#                      busybox-static)
#   SOURCE_DATE_EPOCH  mtime of every file in the image (default: fixed)
set -euo pipefail

usage() {
    echo "usage: $0 OUT_DIR [VERSION] [REVISION]" >&2
    exit 2
}

[ $# -ge 1 ] && [ $# -le 3 ] || usage
OUT_DIR=$1
VERSION=${2:-24.10.0}
REVISION=${3:-r28427-6df0e3d02a}
TARGET=x86
SUBTARGET=64
PROFILE=generic
ARCH=x86_64

case "$VERSION$REVISION" in
    *[!A-Za-z0-9._+~-]*) echo "VERSION/REVISION may only contain [A-Za-z0-9._+~-]" >&2; exit 2 ;;
esac

CACHE_DIR=${WRTCI_CACHE:-${HOME:-/root}/.cache/wrtci}/virtual-lab
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
FIRMWARE_NAME="openwrt-${VERSION}-${TARGET}-${SUBTARGET}-${PROFILE}-initramfs-rootfs.cpio.gz"

log() { echo "build-firmware: $*" >&2; }
die() { echo "build-firmware: error: $*" >&2; exit 1; }

for tool in cpio gzip sha256sum; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install cpio gzip coreutils)"
done

BUSYBOX=${BUSYBOX:-}
if [ -z "$BUSYBOX" ]; then
    for candidate in /bin/busybox /usr/bin/busybox; do
        [ -x "$candidate" ] && { BUSYBOX=$candidate; break; }
    done
fi
[ -n "$BUSYBOX" ] && [ -x "$BUSYBOX" ] || die "static busybox not found (apt-get install busybox-static)"
if command -v file >/dev/null && ! file -L "$BUSYBOX" | grep -q 'statically linked'; then
    die "$BUSYBOX is not statically linked (apt-get install busybox-static)"
fi

mkdir -p "$OUT_DIR" "$CACHE_DIR"
WORK=$(mktemp -d "${TMPDIR:-/tmp}/wrtci-virtual-lab.XXXXXX")
trap 'rm -rf "$WORK"' EXIT

# --------------------------------------------------------------------------
# Kernel: the Debian amd64 kernel (serial console, gzip initrd and devtmpfs
# are built in). Cached per package name, so a second run needs no network.
# --------------------------------------------------------------------------
resolve_kernel_package() {
    if [ -n "${KERNEL_PACKAGE:-}" ]; then
        echo "$KERNEL_PACKAGE"
        return
    fi
    apt-cache depends linux-image-amd64 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

fetch_kernel() {
    local pkg vmlinuz deb
    pkg=$(resolve_kernel_package || true)
    if [ -z "$pkg" ]; then
        # No apt metadata (offline?): fall back to the newest cached kernel.
        vmlinuz=$(ls -1 "$CACHE_DIR"/vmlinuz-* 2>/dev/null | sort -V | tail -n 1 || true)
        [ -n "$vmlinuz" ] || die "cannot resolve the kernel package (apt-cache depends linux-image-amd64) and none is cached"
        log "apt metadata unavailable, using cached $vmlinuz"
        echo "$vmlinuz"
        return
    fi
    vmlinuz="$CACHE_DIR/vmlinuz-${pkg#linux-image-}"
    if [ -s "$vmlinuz" ]; then
        log "kernel $pkg: cached"
        echo "$vmlinuz"
        return
    fi
    log "kernel $pkg: downloading"
    deb=$(ls -1 "$CACHE_DIR/${pkg}_"*.deb 2>/dev/null | tail -n 1 || true)
    if [ -z "$deb" ]; then
        if ! (cd "$CACHE_DIR" && apt-get download "$pkg" >&2); then
            # Stale package lists name a kernel the mirror no longer has.
            [ "$(id -u)" -eq 0 ] || die "apt-get download $pkg failed (try: apt-get update)"
            log "apt-get download $pkg failed: refreshing the package lists once"
            apt-get update -qq >&2 || die "apt-get update failed"
            pkg=$(resolve_kernel_package) || die "cannot resolve the kernel package"
            vmlinuz="$CACHE_DIR/vmlinuz-${pkg#linux-image-}"
            (cd "$CACHE_DIR" && apt-get download "$pkg" >&2) \
                || die "apt-get download $pkg failed"
        fi
        deb=$(ls -1 "$CACHE_DIR/${pkg}_"*.deb | tail -n 1)
    fi
    mkdir -p "$WORK/kernel"
    dpkg-deb -x "$deb" "$WORK/kernel"
    local found
    found=$(ls -1 "$WORK"/kernel/boot/vmlinuz-* | head -n 1) || die "no boot/vmlinuz-* in $deb"
    cp "$found" "$vmlinuz.tmp"
    mv "$vmlinuz.tmp" "$vmlinuz"
    rm -f "$deb"   # ~70 MB; the extracted kernel is all we keep
    echo "$vmlinuz"
}

KERNEL=$(fetch_kernel)
cp "$KERNEL" "$OUT_DIR/vmlinuz.tmp"
mv "$OUT_DIR/vmlinuz.tmp" "$OUT_DIR/vmlinuz"

# --------------------------------------------------------------------------
# Firmware: busybox initramfs that looks like an OpenWrt initramfs image.
# --------------------------------------------------------------------------
ROOT="$WORK/rootfs"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,etc,proc,sys,dev,tmp,root,mnt,overlay,rom,lib}
ln -s tmp "$ROOT/var"
cp "$BUSYBOX" "$ROOT/bin/busybox"
ln -s busybox "$ROOT/bin/sh"

DESCRIPTION="OpenWrt ${VERSION} ${REVISION}"

cat > "$ROOT/etc/openwrt_release" <<EOF
DISTRIB_ID='OpenWrt'
DISTRIB_RELEASE='${VERSION}'
DISTRIB_REVISION='${REVISION}'
DISTRIB_TARGET='${TARGET}/${SUBTARGET}'
DISTRIB_ARCH='${ARCH}'
DISTRIB_DESCRIPTION='${DESCRIPTION}'
DISTRIB_TAINTS='virtual-lab'
EOF

cat > "$ROOT/etc/os-release" <<EOF
NAME="OpenWrt"
VERSION="${VERSION}"
ID="openwrt"
ID_LIKE="lede openwrt"
PRETTY_NAME="${DESCRIPTION}"
VERSION_ID="${VERSION}"
HOME_URL="https://openwrt.org/"
BUG_URL="https://bugs.openwrt.org/"
SUPPORT_URL="https://forum.openwrt.org/"
BUILD_ID="${REVISION}"
OPENWRT_BOARD="${TARGET}/${SUBTARGET}"
OPENWRT_ARCH="${ARCH}"
OPENWRT_TAINTS="virtual-lab"
OPENWRT_DEVICE_MANUFACTURER="OpenWrt"
OPENWRT_DEVICE_MANUFACTURER_URL="https://openwrt.org/"
OPENWRT_DEVICE_PRODUCT="Generic"
OPENWRT_DEVICE_REVISION="v0"
OPENWRT_RELEASE="${DESCRIPTION}"
EOF
echo "${REVISION}" > "$ROOT/etc/openwrt_version"
echo "OpenWrt" > "$ROOT/etc/hostname"

cat > "$ROOT/etc/banner" <<EOF
  _______                     ________        __
 |       |.-----.-----.-----.|  |  |  |.----.|  |_
 |   -   ||  _  |  -__|     ||  |  |  ||   _||   _|
 |_______||   __|_____|__|__||________||__|  |____|
          |__| W I R E L E S S   F R E E D O M
 -----------------------------------------------------
 OpenWrt ${VERSION}, ${REVISION}  (wrtci virtual lab)
 -----------------------------------------------------
EOF

cat > "$ROOT/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/ash
daemon:*:1:1:daemon:/var:/bin/false
nobody:*:65534:65534:nobody:/var:/bin/false
EOF
cat > "$ROOT/etc/group" <<'EOF'
root:x:0:
daemon:x:1:
nogroup:x:65534:
EOF
cat > "$ROOT/etc/shells" <<'EOF'
/bin/ash
/bin/sh
EOF
cat > "$ROOT/etc/profile" <<'EOF'
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
export PS1='root@OpenWrt:\w# '
EOF

cat > "$ROOT/init" <<'EOF'
#!/bin/busybox sh
# PID 1 of the wrtci virtual lab firmware. It must never exit.
/bin/busybox mkdir -p /dev /proc /sys /tmp
/bin/busybox mount -t devtmpfs devtmpfs /dev 2>/dev/null
# The cpio has no device nodes (built without root): attach to the console now.
[ -c /dev/console ] && exec </dev/console >/dev/console 2>&1
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
mkdir -p /dev/pts /dev/shm /tmp/run /tmp/lock /tmp/log
mount -t devpts devpts /dev/pts 2>/dev/null
hostname -F /etc/hostname
ip link set lo up 2>/dev/null
echo "procd: - early -"
echo "procd: - init -"
echo "wrtci virtual lab: $(. /etc/openwrt_release; echo "$DISTRIB_DESCRIPTION") booted"
export PS1='root@OpenWrt:\w# '
export ENV=/etc/profile
while true; do
    echo
    echo "Please press Enter to activate this console."
    read -r _ || sleep 1
    cat /etc/banner
    setsid cttyhack sh -i
    sleep 1
done
EOF

# Normalize everything that ends up in the archive.
find "$ROOT" -type d -exec chmod 0755 {} +
find "$ROOT" -type f -exec chmod 0644 {} +
chmod 0755 "$ROOT/init" "$ROOT/bin/busybox"
chmod 1777 "$ROOT/tmp"
chmod 0700 "$ROOT/root"
find "$ROOT" -exec touch -h -d "@${SOURCE_DATE_EPOCH}" {} +

FIRMWARE="$OUT_DIR/$FIRMWARE_NAME"
(
    cd "$ROOT"
    find . -mindepth 1 | LC_ALL=C sort \
        | cpio --quiet -o -H newc -R 0:0 --reproducible
) | gzip -9 -n > "$FIRMWARE.tmp"
mv "$FIRMWARE.tmp" "$FIRMWARE"

SHA256=$(sha256sum "$FIRMWARE" | cut -d' ' -f1)
echo "$SHA256  $FIRMWARE_NAME" > "$FIRMWARE.sha256"
log "kernel:   $OUT_DIR/vmlinuz ($(basename "$KERNEL"))"
log "firmware: $FIRMWARE ($(stat -c %s "$FIRMWARE") bytes)"
echo "$SHA256  $FIRMWARE"
