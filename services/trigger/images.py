"""Firmware and image ids, and what an image file is, told from its name.

OpenWrt names its images ``openwrt-[<version>-]<target>-<subtarget>-<profile>-
<filesystem>-<type>.<ext>`` (``...-squashfs-sysupgrade.bin``,
``...-initramfs-kernel.bin``, ``...-ext4-combined-efi.img.gz``). Uploads and PR
artifacts carry no profiles.json entry for every file, so the type and the
filesystem are read from the name.
"""

from __future__ import annotations

import hashlib
import re

from wrtci.services.firmware_store import ORIGIN

SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+,=-]*$")
"""An image file name: no directory part, nothing a shell or a URL would read."""

PROFILE_RE = re.compile(r"^(?!\.\.?$)[A-Za-z0-9_.,-]{1,100}$")
"""A profile id (``tplink_archer-c7-v2``): it becomes the third part of a device type."""

FILESYSTEMS = ("squashfs", "ext4", "initramfs", "jffs2", "ubifs", "ubi")
"""Name tokens that say the filesystem."""

_TYPES = ("sysupgrade", "factory", "kernel", "rootfs", "combined", "recovery", "sdcard",
          "uImage", "tftp", "bootloader")
"""Name tokens that say the image type (the last one in the name wins)."""

_EXTENSIONS = re.compile(
    r"(\.(bin|img|itb|trx|chk|ubi|vmlinux|elf|fit|tar|cpio|ext4|squashfs|iso|vdi|vmdk|qcow2))?"
    r"(\.(gz|xz|zst|bz2|lzma))?$"
)


def official_firmware_id(channel: str, version: str, revision: str) -> str:
    return f"{ORIGIN}:official:{channel}:{version}:{revision}"


def pr_firmware_id(repository: str, number: int, head_sha: str) -> str:
    return f"{ORIGIN}:pr:{repository}#{number}:{head_sha}"


def upload_firmware_id(sha256s: list[str]) -> str:
    """One id per set of files: the sha256 itself for one file, else a digest of them."""
    if len(sha256s) == 1:
        return f"{ORIGIN}:upload:{sha256s[0]}"
    joined = "\n".join(sorted(sha256s)).encode()
    return f"{ORIGIN}:upload:{hashlib.sha256(joined).hexdigest()}"


def image_id(firmware_id: str, target: str, subtarget: str, profile: str | None,
             name: str) -> str:
    return f"{firmware_id}:{target}/{subtarget}/{profile or '*'}:{name}"


def discovered_event_id(firmware_id: str, part: str | None = None) -> str:
    """Deterministic event id, the ``Nats-Msg-Id``.

    ``part`` names one target/subtarget of an official firmware: a release's
    targets appear on the downloads server one by one (and every target's
    images together would not fit in one NATS message), so each target of the
    firmware is announced once on its own.
    """
    return f"firmware.discovered:{firmware_id}" + (f":{part}" if part else "")


def classify(name: str) -> tuple[str | None, str | None]:
    """(type, filesystem) of an image file name; type None if the name does not say."""
    stem = _EXTENSIONS.sub("", name.rsplit("/", 1)[-1])
    tokens = stem.split("-")
    filesystem = next((t for t in tokens if t in FILESYSTEMS), None)
    image_type = None
    for index in range(len(tokens) - 1, -1, -1):
        token = tokens[index]
        if token == "efi" and index > 0 and tokens[index - 1] == "combined":
            image_type = "combined-efi"
            break
        if token in _TYPES:
            image_type = token
            break
    return image_type, filesystem


def guess_profile(name: str, target: str, subtarget: str) -> str | None:
    """The profile part of ``openwrt-[<v>-]<target>-<subtarget>-<profile>-<fs>-...``."""
    marker = f"-{target}-{subtarget}-"
    if marker not in f"-{name}":
        return None
    rest = f"-{name}".split(marker, 1)[1]
    tokens = rest.split("-")
    profile_tokens = []
    for token in tokens:
        if token in FILESYSTEMS or token in _TYPES:
            break
        profile_tokens.append(token)
    else:
        return None  # the name never said where the profile ends
    return "-".join(profile_tokens) or None
