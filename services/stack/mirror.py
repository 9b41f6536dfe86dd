"""A local OpenWrt downloads mirror for ``wrtci up --demo``.

It has the real layout and formats (``.versions.json``, a release's
``.targets.json`` and ``targets/<target>/<subtarget>/profiles.json``), so the
trigger scans it exactly as it scans downloads.openwrt.org. The one release
holds the virtual lab's firmware as the x86/64 ``generic`` profile image,
published as OpenWrt publishes its x86 combined images: gzipped
(``...-ext4-combined.img.gz``), with the sha256 of the ``.gz`` file in
profiles.json. The lab decompresses it for QEMU (lab_daemon/firmware_prep.py).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
from pathlib import Path

from aiohttp import web

from wrtci.services.stack.servers import LOOPBACK
from wrtci.services.stack.virtual_lab import VirtualFirmware

DEMO_SOURCE_DATE_EPOCH = 1738600000


def firmware_id(firmware: VirtualFirmware) -> str:
    """The id the trigger gives this release (channel stable)."""
    return f"wrtci:official:stable:{firmware.version}:{firmware.revision}"


def gzip_image(image: Path, dest: Path) -> str:
    """Write ``image`` gzipped to ``dest`` (reproducibly: no name, mtime 0); its sha256."""
    tmp = dest.with_name(f".{dest.name}.tmp")
    with (open(image, "rb") as src, open(tmp, "wb") as raw,
          gzip.GzipFile(filename="", mode="wb", fileobj=raw, compresslevel=6,
                        mtime=0) as out):
        shutil.copyfileobj(src, out, 1 << 20)
    with open(tmp, "rb") as written:
        sha256 = hashlib.file_digest(written, "sha256").hexdigest()
    os.replace(tmp, dest)
    return sha256


def write_release(mirror_dir: Path, firmware: VirtualFirmware) -> Path:
    """Lay out one stable release with the firmware; returns the image's path in the mirror.

    The image is published gzipped, as downloads.openwrt.org has x86 combined
    images; profiles.json names the ``.img.gz`` and gives its sha256.
    """
    release = mirror_dir / "releases" / firmware.version
    target_dir = release / "targets" / "x86" / "64"
    target_dir.mkdir(parents=True, exist_ok=True)
    (mirror_dir / ".versions.json").write_text(json.dumps({
        "stable_version": firmware.version,
        "oldstable_version": "",
        "upcoming_version": "",
        "versions_list": [firmware.version],
    }, indent=2))
    (release / ".targets.json").write_text(json.dumps({"x86/64": "x86_64"}, indent=2))
    published = target_dir / f"{firmware.image.name}.gz"
    sha256 = gzip_image(firmware.image, published)
    profiles = {
        "arch_packages": "x86_64",
        "default_packages": ["base-files", "busybox", "dropbear"],
        "metadata_version": 1,
        "profiles": {
            "generic": {
                "device_packages": [],
                "image_prefix": f"openwrt-{firmware.version}-x86-64-generic",
                "images": [{
                    "filesystem": "ext4",
                    "name": published.name,
                    "sha256": sha256,
                    "sha256_unsigned": sha256,
                    "type": "combined",
                }],
                "supported_devices": [],
                "titles": [{"model": "x86/64 (wrtci virtual lab)", "vendor": "Generic"}],
            }
        },
        "source_date_epoch": DEMO_SOURCE_DATE_EPOCH,
        "target": "x86/64",
        "version_code": firmware.revision,
        "version_number": firmware.version,
    }
    (target_dir / "profiles.json").write_text(json.dumps(profiles, indent=2))
    return published


async def serve_mirror(mirror_dir: Path, port: int) -> web.AppRunner:
    """Serve the mirror over HTTP on loopback (ETag / Last-Modified by aiohttp)."""
    app = web.Application()
    app.router.add_static("/", mirror_dir, show_index=True)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, LOOPBACK, port).start()
    return runner
