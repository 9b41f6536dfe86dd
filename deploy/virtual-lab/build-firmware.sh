#!/usr/bin/env bash
# Build the "virtual lab" firmware: an OpenWrt-lookalike x86/64 combined disk
# image (MBR, syslinux boot partition, ext2 root partition) from Debian packages,
# bootable by QEMU the way openwrt-tests boots OpenWrt (QEMUDriver `disk:`).
#
# usage: build-firmware.sh OUT_DIR [VERSION] [REVISION]
#
# Needs (Debian 12): busybox-static dropbear-bin openssh-client net-tools
# syslinux syslinux-common mtools
# fdisk genext2fs kmod cpio gzip, and apt to fetch the kernel package
# (qemu-system-x86 is only needed to boot the result). Runs without root: no
# loop mounts, every filesystem is written into image files by user tools.
#
# Writes to OUT_DIR:
#   openwrt-VERSION-x86-64-generic-ext4-combined.img         the firmware
#   openwrt-VERSION-x86-64-generic-ext4-combined.img.sha256
# and prints "SHA256  PATH" of the firmware. The same inputs (VERSION,
# REVISION, this directory, the Debian packages used) always give the same
# bytes; a finished image is cached under a hash of those inputs.
#
# Environment:
#   WRTCI_CACHE        cache root (default ~/.cache/wrtci); kernels and built
#                      images live in $WRTCI_CACHE/virtual-lab
#   KERNEL_META        Debian kernel meta package (default
#                      linux-image-cloud-amd64: LZ4-compressed, few built-in
#                      drivers, ext4 built in; it boots much faster under TCG
#                      than linux-image-amd64, whose XZ kernel alone takes
#                      seconds to decompress)
#   KERNEL_PACKAGE     Debian kernel package to use (default: what
#                      KERNEL_META depends on)
#   BUSYBOX            static busybox binary: the initramfs and the root
#                      filesystem's applets (default /bin/busybox of
#                      busybox-static)
#   SHELL_BUSYBOX      busybox whose ash is the root filesystem's shell
#                      (default: Debian's dynamically linked `busybox`
#                      package, fetched and cached; its ash runs commands
#                      from PATH, unlike busybox-static's, which runs its own
#                      applets first)
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

HERE=$(cd "$(dirname "$0")" && pwd)
CACHE_DIR=${WRTCI_CACHE:-${HOME:-/root}/.cache/wrtci}/virtual-lab
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-1700000000}
export SOURCE_DATE_EPOCH
KERNEL_META=${KERNEL_META:-linux-image-cloud-amd64}
FIRMWARE_NAME="openwrt-${VERSION}-${TARGET}-${SUBTARGET}-${PROFILE}-ext4-combined.img"
# Kernel modules the preinit loads (OpenWrt's kernel has these built in).
MODULES="virtio_pci virtio_blk virtio_net virtio-rng bridge overlay crc32c_generic ext4"
# Kernel command line besides console and root. Under TCG (no KVM) the boot
# time goes mostly to: ACPI (its AML interpreter routes every PCI interrupt
# link, ~0.4 s per virtio device, and probes the machine; the PIIX's legacy
# PIRQ routing works as well), the crypto self-tests (~1 s; OpenWrt's kernel
# is built without them), and the serial console (quiet). See the README.
KERNEL_ARGS="quiet acpi=off cryptomgr.notests edd=off"
# Fixed identifiers keep the image reproducible.
DISK_ID=0x5752540a
FAT_SERIAL=57525443
MBR=/usr/lib/syslinux/mbr/mbr.bin

log() { echo "build-firmware: $*" >&2; }
die() { echo "build-firmware: error: $*" >&2; exit 1; }

need() {  # need TOOL PACKAGE
    command -v "$1" >/dev/null || die "$1 not found (apt-get install $2)"
}
need cpio cpio
need gzip gzip
need sha256sum coreutils
need sfdisk fdisk
need mformat mtools
need mcopy mtools
need syslinux syslinux
need genext2fs genext2fs
need depmod kmod
need dpkg-deb dpkg
[ -f "$MBR" ] || die "$MBR not found (apt-get install syslinux-common)"
# Dynamically linked programs from Debian packages, copied with their
# libraries: "SOURCE DESTINATION PACKAGE". OpenWrt's busybox has `netstat -p`
# (Debian's lacks it: net-tools' netstat instead) and its dropbear brings scp
# (Debian's does not: openssh's scp, the legacy protocol's remote end).
DEVICE_PROGRAMS="
/usr/sbin/dropbear /usr/sbin/dropbear dropbear-bin
/usr/bin/scp /usr/bin/scp openssh-client
/usr/bin/netstat /bin/netstat net-tools
"
while read -r src _ pkg; do
    [ -z "$src" ] || [ -x "$src" ] || die "$src not found (apt-get install $pkg)"
done <<< "$DEVICE_PROGRAMS"

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
# Kernel: the Debian amd64 kernel and the few modules the firmware needs,
# cached per package (the 70 MB .deb is not kept), so later builds are offline.
# --------------------------------------------------------------------------
resolve_kernel_package() {
    if [ -n "${KERNEL_PACKAGE:-}" ]; then
        echo "$KERNEL_PACKAGE"
        return
    fi
    apt-cache depends "$KERNEL_META" 2>/dev/null \
        | awk '/Depends: linux-image-[0-9]/ { print $2; exit }'
}

# Print the modules (paths relative to the modules dir) to load, in order:
# each module's dependencies (modules.dep lists them transitively, last
# loaded first) before the module itself. Modules built into the kernel
# (modules.builtin) are skipped.
module_load_order() {
    local dep=$1 name path deps seen=" "
    local builtin=${dep%/modules.dep}/modules.builtin
    for name in $MODULES; do
        if awk -v want="/${name//-/_}.ko" '{ gsub(/-/, "_") }
                substr($0, length($0) - length(want) + 1) == want { found = 1; exit }
                END { exit !found }' "$builtin"; then
            continue
        fi
        path=$(awk -F: -v want="/${name}.ko" \
            'substr($1, length($1) - length(want) + 1) == want { print $1; exit }' "$dep")
        [ -n "$path" ] || die "kernel module $name not found in $dep"
        deps=$(awk -F: -v p="$path" '$1 == p { print $2; exit }' "$dep")
        for path in $(echo "$deps" | tr ' ' '\n' | tac) "$path"; do
            case "$seen" in *" $path "*) continue ;; esac
            seen="$seen$path "
            echo "$path"
        done
    done
}

fetch_kernel() {
    local pkg dir deb kver
    pkg=$(resolve_kernel_package || true)
    if [ -z "$pkg" ]; then
        # No apt metadata (offline?): fall back to the newest cached kernel.
        dir=$(ls -1d "$CACHE_DIR/kernel-"*"-${KERNEL_META#linux-image-}" 2>/dev/null | sort -V | tail -n 1 || true)
        [ -n "$dir" ] || die "cannot resolve the kernel package (apt-cache depends $KERNEL_META) and none is cached"
        log "apt metadata unavailable, using cached $dir"
        echo "$dir"
        return
    fi
    dir="$CACHE_DIR/kernel-${pkg#linux-image-}"
    if [ -s "$dir/vmlinuz" ] && [ "$(cat "$dir/modules.list" 2>/dev/null)" = "$MODULES" ]; then
        log "kernel $pkg: cached"
        echo "$dir"
        return
    fi
    log "kernel $pkg: downloading"
    mkdir -p "$WORK/deb"
    if ! (cd "$WORK/deb" && apt-get download "$pkg" >&2 2>/dev/null); then
        # Stale package lists name a kernel the mirror no longer has.
        [ "$(id -u)" -eq 0 ] || die "apt-get download $pkg failed (try: apt-get update)"
        log "apt-get download $pkg failed: refreshing the package lists once"
        apt-get update -qq >&2 || die "apt-get update failed"
        pkg=$(resolve_kernel_package) || die "cannot resolve the kernel package"
        dir="$CACHE_DIR/kernel-${pkg#linux-image-}"
        (cd "$WORK/deb" && apt-get download "$pkg" >&2 2>/dev/null) \
            || die "apt-get download $pkg failed"
    fi
    deb=$(ls -1 "$WORK/deb/${pkg}_"*.deb | tail -n 1)
    mkdir -p "$WORK/kernel"
    dpkg-deb -x "$deb" "$WORK/kernel"
    rm -f "$deb"
    kver=$(ls -1 "$WORK/kernel/lib/modules" | head -n 1)
    [ -n "$kver" ] || die "no lib/modules in $pkg"
    depmod -b "$WORK/kernel" "$kver"
    rm -rf "$dir.tmp"
    mkdir -p "$dir.tmp/modules"
    cp "$WORK/kernel/boot/vmlinuz-$kver" "$dir.tmp/vmlinuz" || die "no boot/vmlinuz-$kver in $pkg"
    local path
    module_load_order "$WORK/kernel/lib/modules/$kver/modules.dep" | while read -r path; do
        cp "$WORK/kernel/lib/modules/$kver/$path" "$dir.tmp/modules/"
        basename "$path"
    done > "$dir.tmp/load-order"
    echo "$kver" > "$dir.tmp/release"
    echo "$MODULES" > "$dir.tmp/modules.list"
    rm -rf "$dir" "$WORK/kernel"
    mv "$dir.tmp" "$dir"
    echo "$dir"
}

KERNEL_DIR=$(fetch_kernel)

# --------------------------------------------------------------------------
# The root filesystem's shell: ash of Debian's `busybox` package. The applets
# are busybox-static's (a static program starts several times faster than a
# dynamic one under TCG), but busybox-static's own ash runs its applets before
# anything on PATH, so its `netstat` (no -p) would hide net-tools' netstat.
# The package conflicts with busybox-static, so it is fetched, not installed,
# and cached per version.
# --------------------------------------------------------------------------
fetch_shell_busybox() {
    local version dir
    if [ -n "${SHELL_BUSYBOX:-}" ]; then
        [ -x "$SHELL_BUSYBOX" ] || die "SHELL_BUSYBOX=$SHELL_BUSYBOX is not executable"
        echo "$SHELL_BUSYBOX"
        return
    fi
    version=$(apt-cache policy busybox 2>/dev/null | awk '/Candidate:/ { print $2; exit }')
    if [ -z "$version" ] || [ "$version" = "(none)" ]; then
        dir=$(ls -1d "$CACHE_DIR"/busybox-* 2>/dev/null | sort -V | tail -n 1 || true)
        [ -n "$dir" ] || die "cannot resolve the busybox package (apt-cache policy busybox) and none is cached"
        log "apt metadata unavailable, using cached $dir"
        echo "$dir/busybox"
        return
    fi
    dir="$CACHE_DIR/busybox-${version//[^A-Za-z0-9.+~-]/_}"
    if [ -x "$dir/busybox" ]; then
        echo "$dir/busybox"
        return
    fi
    log "busybox $version: downloading"
    rm -rf "$WORK/busybox" "$dir.tmp"
    mkdir -p "$WORK/busybox" "$dir.tmp"
    (cd "$WORK/busybox" && apt-get download "busybox=$version" >&2 2>/dev/null) \
        || die "apt-get download busybox=$version failed (try: apt-get update)"
    dpkg-deb -x "$WORK/busybox/"busybox_*.deb "$WORK/busybox/x"
    cp "$WORK/busybox/x/bin/busybox" "$dir.tmp/busybox"
    rm -rf "$dir" "$WORK/busybox"
    mv "$dir.tmp" "$dir"
    echo "$dir/busybox"
}

SHELL_BUSYBOX=$(fetch_shell_busybox)

# --------------------------------------------------------------------------
# The finished image is cached under a hash of everything that goes into it.
# --------------------------------------------------------------------------
device_program_sources() { awk 'NF { print $1 }' <<< "$DEVICE_PROGRAMS"; }
device_program_libs() {  # the shared libraries the device programs need
    { echo "$SHELL_BUSYBOX"; device_program_sources; } | xargs ldd \
        | awk '/=> \// { print $3 } /^\t\/lib64\// { print $1 }' | LC_ALL=C sort -u
}

INPUTS_HASH=$(
    {
        echo "$VERSION $REVISION $SOURCE_DATE_EPOCH $MODULES $DISK_ID $FAT_SERIAL $KERNEL_ARGS"
        sha256sum "$0" "$HERE/preinit/init" "$KERNEL_DIR/vmlinuz" "$KERNEL_DIR"/modules/* \
            "$BUSYBOX" "$SHELL_BUSYBOX" $(device_program_sources) $(device_program_libs) "$MBR" | cut -d' ' -f1
        (cd "$HERE/files" && find . | LC_ALL=C sort | while read -r f; do
            if [ -f "$f" ]; then echo "$f $(sha256sum < "$f")"; else echo "$f"; fi
        done)
        dpkg-query -W syslinux mtools genext2fs fdisk 2>/dev/null || true
    } | sha256sum | cut -c1-16
)
CACHED="$CACHE_DIR/images/$INPUTS_HASH/$FIRMWARE_NAME"
FIRMWARE="$OUT_DIR/$FIRMWARE_NAME"

finish() {
    local sha256
    sha256=$(cut -d' ' -f1 "$CACHED.sha256")
    cp "$CACHED" "$FIRMWARE.tmp"
    mv "$FIRMWARE.tmp" "$FIRMWARE"
    echo "$sha256  $FIRMWARE_NAME" > "$FIRMWARE.sha256"
    echo "$sha256  $FIRMWARE"
    exit 0
}

if [ -s "$CACHED" ] && [ -s "$CACHED.sha256" ]; then
    log "firmware: cached ($INPUTS_HASH)"
    finish
fi

# --------------------------------------------------------------------------
# Root filesystem: busybox, the device programs (with their libraries),
# OpenWrt's files.
# --------------------------------------------------------------------------
ROOT="$WORK/rootfs"
mkdir -p "$ROOT"/{bin,sbin,usr/bin,usr/sbin,lib,etc/dropbear,proc,sys,dev,tmp,root,rom,overlay,mnt}
cp "$BUSYBOX" "$ROOT/bin/busybox"
"$BUSYBOX" --list-full | while read -r applet; do
    case "$applet" in bin/busybox|*/ubus) continue ;; esac
    mkdir -p "$ROOT/$(dirname "$applet")"
    ln -sf "/bin/busybox" "$ROOT/$applet"
done
rm -f "$ROOT/bin/ash" "$ROOT/bin/sh"
cp "$SHELL_BUSYBOX" "$ROOT/bin/ash"           # runs as ash (argv[0])
ln -s ash "$ROOT/bin/sh"
ln -sf tmp "$ROOT/var"
ln -sf /tmp/resolv.conf "$ROOT/etc/resolv.conf"

while read -r src dest _; do
    [ -n "$src" ] || continue
    rm -f "$ROOT$dest"                         # replaces a busybox applet link
    cp "$src" "$ROOT$dest"
done <<< "$DEVICE_PROGRAMS"
for lib in $(device_program_libs); do
    mkdir -p "$ROOT$(dirname "$lib")"
    cp -L "$lib" "$ROOT$lib"
done
# The loader is found at /lib64/ld-linux-x86-64.so.2 (the ELF interpreter).
if [ ! -e "$ROOT/lib64/ld-linux-x86-64.so.2" ]; then
    mkdir -p "$ROOT/lib64"
    cp -L /lib64/ld-linux-x86-64.so.2 "$ROOT/lib64/"
fi

cp -R "$HERE/files/." "$ROOT/"

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
echo "${SOURCE_DATE_EPOCH}" > "$ROOT/etc/openwrt_builddate"
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
ln -sf ../bin/busybox "$ROOT/sbin/init"

normalize() {  # normalize DIR: modes and mtimes of everything in it
    find "$1" -type d -exec chmod 0755 {} +
    find "$1" -type f -exec chmod 0644 {} +
    find "$1" -exec touch -h -d "@${SOURCE_DATE_EPOCH}" {} +
}
normalize "$ROOT"
chmod 0755 "$ROOT/bin/busybox" "$ROOT/bin/ash" "$ROOT/bin/ubus" "$ROOT/etc/init.d/rcS" \
    "$ROOT/lib/netifd/dhcp.script" "$ROOT/sbin/sysupgrade" \
    $(awk 'NF { print "'"$ROOT"'" $2 }' <<< "$DEVICE_PROGRAMS")
find "$ROOT/lib" "$ROOT/lib64" -name 'ld-linux*' -exec chmod 0755 {} +
chmod 1777 "$ROOT/tmp"
chmod 0700 "$ROOT/root" "$ROOT/etc/dropbear"
chmod 0600 "$ROOT/etc/shadow"

# --------------------------------------------------------------------------
# Preinit initramfs (boot partition): static busybox, the modules, /init.
# --------------------------------------------------------------------------
INITRD="$WORK/initrd"
mkdir -p "$INITRD"/{bin,dev,proc,sys,lib/modules}
cp "$BUSYBOX" "$INITRD/bin/busybox"
ln -s busybox "$INITRD/bin/sh"
cp "$KERNEL_DIR"/modules/* "$INITRD/lib/modules/"
cp "$KERNEL_DIR/load-order" "$INITRD/lib/modules/load-order"
cp "$HERE/preinit/init" "$INITRD/init"
normalize "$INITRD"
chmod 0755 "$INITRD/init" "$INITRD/bin/busybox"
(
    cd "$INITRD"
    find . -mindepth 1 | LC_ALL=C sort | cpio --quiet -o -H newc -R 0:0 --reproducible
) | gzip -9 -n > "$WORK/initrd.gz"

# --------------------------------------------------------------------------
# The disk: MBR (syslinux boot code), p1 FAT boot partition (syslinux, kernel,
# initramfs), p2 ext2 root (mounted with the ext4 driver, as OpenWrt's ext4
# images are). Sizes follow the contents, in whole MiB.
# --------------------------------------------------------------------------
mib() { echo $(( ($1 + 1048575) / 1048576 )); }
KERNEL_BYTES=$(stat -c %s "$KERNEL_DIR/vmlinuz")
INITRD_BYTES=$(stat -c %s "$WORK/initrd.gz")
BOOT_MIB=$(( $(mib $((KERNEL_BYTES + INITRD_BYTES))) + 2 ))
ROOT_KIB=$(du -s -k --apparent-size "$ROOT" | cut -f1)
ROOT_INODES=$(( $(find "$ROOT" | wc -l) + 256 ))
ROOT_MIB=$(( ROOT_KIB / 1024 + ROOT_INODES / 256 + 4 ))
BOOT_START=2048                                  # sectors (1 MiB)
BOOT_SECTORS=$(( BOOT_MIB * 2048 ))
ROOT_START=$(( BOOT_START + BOOT_SECTORS ))
ROOT_SECTORS=$(( ROOT_MIB * 2048 ))
DISK="$WORK/disk.img"

cat > "$WORK/syslinux.cfg" <<EOF
SERIAL 0 115200
DEFAULT openwrt
PROMPT 0
TIMEOUT 0
LABEL openwrt
  LINUX /vmlinuz
  INITRD /initrd.gz
  APPEND console=ttyS0,115200n8 root=/dev/vda2 rootfstype=ext4 $KERNEL_ARGS
EOF
cp "$KERNEL_DIR/vmlinuz" "$WORK/vmlinuz"
touch -d "@${SOURCE_DATE_EPOCH}" "$WORK/syslinux.cfg" "$WORK/vmlinuz" "$WORK/initrd.gz"

# -U: every file owned by root (the build runs as any user); modes as normalized
genext2fs -U -N "$ROOT_INODES" -b $(( ROOT_MIB * 1024 )) -B 1024 -m 0 -L rootfs \
    -d "$ROOT" "$WORK/root.ext2"

truncate -s $(( (ROOT_START + ROOT_SECTORS) * 512 )) "$DISK"
sfdisk --quiet --no-reread --no-tell-kernel "$DISK" <<EOF
label: dos
label-id: $DISK_ID
unit: sectors

start=$BOOT_START, size=$BOOT_SECTORS, type=c, bootable
start=$ROOT_START, size=$ROOT_SECTORS, type=83
EOF
dd if="$MBR" of="$DISK" bs=440 count=1 conv=notrunc status=none
BOOT_OFFSET=$(( BOOT_START * 512 ))
export MTOOLS_SKIP_CHECK=1
mformat -i "$DISK@@$BOOT_OFFSET" -T "$BOOT_SECTORS" -h 64 -s 32 -H "$BOOT_START" \
    -N "$FAT_SERIAL" -v BOOT ::
syslinux --offset "$BOOT_OFFSET" --install "$DISK"
mcopy -m -i "$DISK@@$BOOT_OFFSET" "$WORK/syslinux.cfg" "$WORK/vmlinuz" "$WORK/initrd.gz" ::
dd if="$WORK/root.ext2" of="$DISK" bs=1M seek=$(( ROOT_START / 2048 )) conv=notrunc status=none

SHA256=$(sha256sum "$DISK" | cut -d' ' -f1)
mkdir -p "$(dirname "$CACHED")"
mv "$DISK" "$CACHED.tmp"
echo "$SHA256  $FIRMWARE_NAME" > "$CACHED.sha256"
mv "$CACHED.tmp" "$CACHED"
log "kernel:   $(cat "$KERNEL_DIR/release") ($(basename "$KERNEL_DIR"))"
log "firmware: $FIRMWARE ($(stat -c %s "$CACHED") bytes, inputs $INPUTS_HASH)"
finish
