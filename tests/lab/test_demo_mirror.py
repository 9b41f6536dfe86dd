"""The demo's downloads mirror publishes the firmware as OpenWrt publishes x86
images: a gzipped combined image, its sha256 (of the .gz) in profiles.json.

The whole path (trigger -> lab decompression -> QEMU) runs in test_spine.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import aiohttp
import msgspec

from wrtci.lab_daemon.firmware_prep import gunzip, is_gzip, raw_name
from wrtci.services.stack.mirror import serve_mirror, write_release
from wrtci.services.stack.virtual_lab import REVISION, VERSION, VirtualFirmware, image_name
from wrtci.services.trigger.official import ProfilesIndex, Release, firmware_from_profiles


def _raw_image(directory: Path) -> Path:
    """A stand-in disk image: the mirror only moves bytes (random and zero runs)."""
    image = directory / image_name(VERSION)
    image.write_bytes(os.urandom(64 * 1024) + bytes(512 * 1024) + os.urandom(4096))
    return image


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_release_holds_the_image_gzipped_with_the_sha256_of_the_gz(tmp_path):
    raw = _raw_image(tmp_path)
    firmware = VirtualFirmware(image=raw, version=VERSION, revision=REVISION)
    mirror = tmp_path / "mirror"

    published = write_release(mirror, firmware)

    target_dir = mirror / "releases" / VERSION / "targets" / "x86" / "64"
    assert published == target_dir / f"openwrt-{VERSION}-x86-64-generic-ext4-combined.img.gz"
    assert sorted(p.name for p in target_dir.iterdir()) == sorted([published.name, "profiles.json"])
    assert is_gzip(published)
    # the trigger reads profiles.json as it reads downloads.openwrt.org's
    index = msgspec.json.decode((target_dir / "profiles.json").read_bytes(), type=ProfilesIndex)
    found = firmware_from_profiles(index, Release("stable", f"releases/{VERSION}"),
                                   "http://mirror.invalid")
    [image] = found.images
    assert (image.name, image.type, image.filesystem) == (published.name, "combined", "ext4")
    assert image.sha256 == _sha256(published) != firmware.sha256
    assert image.url == (f"http://mirror.invalid/releases/{VERSION}/targets/x86/64/"
                         f"{published.name}")
    # the lab's decompression gives back the disk image, byte for byte
    unpacked = tmp_path / raw_name(published.name)
    gunzip(published, unpacked)
    assert unpacked.name == raw.name
    assert unpacked.read_bytes() == raw.read_bytes()


def test_publishing_again_gives_the_same_bytes(tmp_path):
    firmware = VirtualFirmware(image=_raw_image(tmp_path), version=VERSION, revision=REVISION)
    first = _sha256(write_release(tmp_path / "a", firmware))
    second = write_release(tmp_path / "b", firmware)
    assert _sha256(second) == first
    profiles = json.loads((second.parent / "profiles.json").read_text())
    assert profiles["profiles"]["generic"]["images"][0]["sha256"] == first
    assert not list(second.parent.glob(".*.tmp"))


async def test_the_mirror_serves_the_gz_as_a_file_not_a_content_encoding(tmp_path):
    # An HTTP client would transparently inflate a "Content-Encoding: gzip"
    # response, and the download would no longer match its sha256.
    firmware = VirtualFirmware(image=_raw_image(tmp_path), version=VERSION, revision=REVISION)
    mirror = tmp_path / "mirror"
    published = write_release(mirror, firmware)
    runner = await serve_mirror(mirror, 0)
    try:
        [site] = runner.sites
        port = site._server.sockets[0].getsockname()[1]
        url = f"http://127.0.0.1:{port}/{published.relative_to(mirror).as_posix()}"
        async with aiohttp.ClientSession() as session, session.get(url) as response:
            assert response.status == 200
            assert "Content-Encoding" not in response.headers
            body = await response.read()
    finally:
        await runner.cleanup()
    assert hashlib.sha256(body).hexdigest() == _sha256(published)
