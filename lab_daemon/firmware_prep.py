"""A job's firmware made ready for one device: verified, decompressed, staged.

openwrt-tests' CI does, per device (``.github/workflows/daily.yml``):

- it picks the image from ``profiles.json`` by the target file's
  ``openwrt: image: {type, filesystem}`` (``kernel`` when absent);
- ``gzip -df`` on the download (x86 combined ``.img.gz`` become raw disk
  images for QEMU's ``disk: firmware``; real devices TFTP-boot raw files),
  ignoring the trailing metadata OpenWrt appends to its images;
- ``LG_IMAGE=<tftp dir>/<device>/<name without .gz>``,
  ``LG_ENV=targets/<device>.yaml`` and ``FIRMWARE_VERSION=<version_code>``.

Here the same, for one job on one device:

1. the file's sha256 is checked against the job's before anything else reads
   it (a cache entry damaged on disk is removed, never used);
2. a gzip image is decompressed (unless the device says ``decompress =
   false``) next to it in the firmware cache, once per image: the raw file
   is written to a temp file and renamed, so it is whole or absent;
3. with a ``stage_dir`` (a TFTP or HTTP root) the image is linked or copied
   there, and ``LG_IMAGE`` names the staged file.

Which image type a device wants comes from its lab config (``image_type``)
or its target file's ``openwrt:`` section (:func:`device_image`); the lab
announces it, and the scheduler picks the firmware's image of that type. A job
whose image is still of another type (the firmware has none of that type, or
devices of one type disagree) is refused before the download
(:func:`image_mismatch`, an infrastructure error); a gzip image of the wanted
type is decompressed, which is a conversion, not another type.
Errors are :class:`PrepError`, naming the file and the cause.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import tempfile
import zlib
from pathlib import Path

import msgspec

from wrtci.lab_daemon.config import DeviceConfig
from wrtci.lab_daemon.firmware import FirmwareCache
from wrtci.lab_daemon.targets import read_target_yaml
from wrtci.proto.model import Image

GZIP_MAGIC = b"\x1f\x8b"
BLOCK = 1024 * 1024
STAGED_RECORD = ".wrtci-staged"
"""In a stage directory: the name of the file the lab staged there last."""


class PrepError(Exception):
    """The image cannot be used on this device; the message names the file and cause."""

    def __init__(self, message: str, *, checksum: bool = False) -> None:
        super().__init__(message)
        self.checksum = checksum
        """True when the file is not the image the job names (sha256 mismatch)."""


class OpenwrtSection(msgspec.Struct, frozen=True, kw_only=True):
    """A target file's ``openwrt:`` section (what openwrt-tests' workflows read)."""

    name: str | None = None
    target: str | None = None
    """``<target>-<subtarget>``, e.g. ``ath79-generic``, ``x86-64``."""
    profile: str | None = None
    image_type: str | None = None
    image_filesystem: str | None = None
    snapshots_only: bool = False

    @property
    def image(self) -> str:
        """``type[:filesystem]``; openwrt-tests' default type is ``kernel``."""
        kind = self.image_type or "kernel"
        return f"{kind}:{self.image_filesystem}" if self.image_filesystem else kind


def read_openwrt_section(path: str | Path) -> OpenwrtSection | None:
    """The target file's ``openwrt:`` section; None when the file has none.

    Raises PrepError (naming the file) when it cannot be read or the section
    is malformed.
    """
    path = Path(path)
    data = read_target_yaml(path, PrepError)
    section = data.get("openwrt") if isinstance(data, dict) else None
    if section is None:
        return None
    if not isinstance(section, dict):
        raise PrepError(f"{path}: 'openwrt:' must be a mapping")
    image = section.get("image") or {}
    if not isinstance(image, dict):
        raise PrepError(f"{path}: 'openwrt: image:' must be a mapping")
    try:
        return msgspec.convert({
            "name": section.get("name"), "target": section.get("target"),
            "profile": section.get("profile"), "image_type": image.get("type"),
            "image_filesystem": image.get("filesystem"),
            "snapshots_only": bool(section.get("snapshots_only") or False)}, OpenwrtSection)
    except msgspec.ValidationError as exc:
        raise PrepError(f"{path}: 'openwrt:' section: {exc}") from exc


def wanted_image(device: DeviceConfig, section: OpenwrtSection | None) -> str | None:
    """The image type (``type[:filesystem]``) the device boots: lab config first."""
    if device.image_type:
        return device.image_type
    return section.image if section is not None else None


def split_image(wanted: str | None) -> tuple[str | None, str | None]:
    """``type[:filesystem]`` as (type, filesystem); (None, None) for no wish."""
    if not wanted:
        return None, None
    kind, _, filesystem = wanted.partition(":")
    return kind or None, filesystem or None


def device_image(device: DeviceConfig) -> str | None:
    """What the device announces and judges jobs by: :func:`wanted_image` of its files.

    Raises PrepError (naming the file) when the target file's ``openwrt:``
    section is malformed; a file that cannot be read at all is the target
    loader's to report (then only the lab config's ``image_type`` counts).
    """
    if device.image_type:
        return device.image_type
    try:
        section = read_openwrt_section(device.target_file)
    except PrepError:
        if not Path(device.target_file).is_file():
            return None
        raise
    return wanted_image(device, section)


def _label(image: Image) -> str:
    return f"{image.type}:{image.filesystem}" if image.filesystem else image.type


def image_mismatch(image: Image, wanted: str | None) -> str | None:
    """Why the device must not boot the job's image; None when it may.

    A different type (``sysupgrade`` for a device that boots ``kernel``), or
    a different filesystem when both the device and the image name one, is
    another image: refused. An image without a type or filesystem is not
    known to differ. Compression is no difference: a ``.gz`` of the wanted
    type is decompressed for the device (:func:`prepare`).
    """
    kind, filesystem = split_image(wanted)
    if not kind or not image.type:
        return None
    if image.type == kind and (not filesystem or not image.filesystem
                               or image.filesystem == filesystem):
        return None
    return (f"wrong image type for this device: it boots {wanted} images "
            f"(its lab config or target file says so), the job carries "
            f"{image.name} ({_label(image)}); not run")


# -- the steps (blocking: run them in a thread) -------------------------------------------


def verify_sha256(path: Path, sha256: str) -> None:
    digest = hashlib.sha256()
    try:
        with path.open("rb") as src:
            while block := src.read(BLOCK):
                digest.update(block)
    except OSError as exc:
        raise PrepError(f"{path}: cannot read image: {exc.strerror}") from exc
    actual = digest.hexdigest()
    if actual != sha256.lower():
        raise PrepError(f"{path}: sha256 is {actual}, the job expects {sha256}",
                        checksum=True)


def is_gzip(path: Path) -> bool:
    try:
        with path.open("rb") as src:
            return src.read(2) == GZIP_MAGIC
    except OSError as exc:
        raise PrepError(f"{path}: cannot read image: {exc.strerror}") from exc


def raw_name(name: str) -> str:
    return name[:-3] if name.endswith(".gz") and len(name) > 3 else f"{name}.raw"


def gunzip(src: Path, dest: Path) -> None:
    """``gzip -d`` into ``dest`` (whole or absent): every member, trailing data ignored.

    OpenWrt appends metadata (fwtool's signature block) after the gzip
    stream of its images; ``gzip -d`` warns "trailing garbage ignored" and so
    does this, silently. A stream that is cut short or corrupt is an error.
    """
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=".unpack-")
    try:
        with os.fdopen(fd, "wb") as out, src.open("rb") as compressed:
            _inflate(compressed, out, src)
        os.replace(tmp_name, dest)
    except OSError as exc:
        raise PrepError(f"{src}: cannot decompress: {exc.strerror or exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


def _inflate(compressed, out, src: Path) -> None:
    inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
    members = 0
    pending = b""
    while True:
        block = pending or compressed.read(BLOCK)
        pending = b""
        if not block:
            break
        try:
            out.write(inflater.decompress(block))
        except zlib.error as exc:
            raise PrepError(f"{src}: cannot decompress: corrupt gzip data ({exc})") from exc
        if inflater.eof:
            members += 1
            rest = inflater.unused_data + compressed.read(max(0, 2 - len(inflater.unused_data)))
            if not rest.startswith(GZIP_MAGIC):
                return  # trailing data after the last member: ignored, as gzip -d does
            inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
            pending = rest
    if not inflater.eof:
        raise PrepError(f"{src}: cannot decompress: the gzip stream ends early "
                        f"(truncated download?)")
    if members == 0:
        raise PrepError(f"{src}: cannot decompress: empty file")


def stage(image: Path, stage_dir: Path, name: str) -> Path:
    """``image`` as ``stage_dir/name`` (hard link, else copy); the previous one removed."""
    try:
        stage_dir.mkdir(parents=True, exist_ok=True)
        record = stage_dir / STAGED_RECORD
        with contextlib.suppress(OSError):
            previous = record.read_text().strip()
            if previous and previous != name and "/" not in previous:
                (stage_dir / previous).unlink(missing_ok=True)
        dest = stage_dir / name
        tmp = stage_dir / f".stage-{os.getpid()}-{name}"
        tmp.unlink(missing_ok=True)
        try:
            os.link(image, tmp)
        except OSError:
            shutil.copyfile(image, tmp)
        os.replace(tmp, dest)
        record.write_text(name + "\n")
        return dest
    except OSError as exc:
        raise PrepError(f"{stage_dir}: cannot stage {image.name}: {exc.strerror or exc}") \
            from exc


def stage_dir_for(device: DeviceConfig) -> Path | None:
    if not device.stage_dir:
        return None
    return Path(device.stage_dir.replace("{device}", device.name)
                .replace("{place}", device.place or device.name))


class Prepared(msgspec.Struct, frozen=True, kw_only=True):
    image: Path
    """The file the device boots (held in the cache when it is a cache file)."""
    decompressed: bool = False
    staged: Path | None = None

    @property
    def lg_image(self) -> Path:
        return self.staged or self.image

    def notes(self) -> list[str]:
        """Lines for the job's log: what was done."""
        lines = []
        if self.decompressed:
            lines.append(f"decompressed to {self.image}")
        if self.staged is not None:
            lines.append(f"staged as {self.staged}")
        return lines


def prepare(downloaded: Path, image: Image, device: DeviceConfig,
            derived: Path) -> Prepared:
    """Verify ``downloaded``; decompress it to ``derived`` when needed; stage it.

    ``derived`` is where the raw file belongs (next to the download in the
    cache); an existing one is reused: it was only ever renamed into place
    whole, from a verified download.
    """
    verify_sha256(downloaded, image.sha256)
    wants_raw = device.decompress if device.decompress is not None \
        else downloaded.name.endswith(".gz")
    ready, decompressed = downloaded, False
    if wants_raw and is_gzip(downloaded):
        if not derived.is_file():
            gunzip(downloaded, derived)
        ready, decompressed = derived, True
    staged = None
    stage_to = stage_dir_for(device)
    if stage_to is not None:
        staged = stage(ready, stage_to, device.stage_name or ready.name)
    return Prepared(image=ready, decompressed=decompressed, staged=staged)


def suite_environment(device: DeviceConfig, revision: str | None) -> dict[str, str]:
    """What openwrt-tests' CI exports besides LG_IMAGE: LG_ENV and FIRMWARE_VERSION."""
    env = {"LG_ENV": str(Path(device.target_file).resolve())}
    if revision:
        env["FIRMWARE_VERSION"] = revision  # profiles.json's version_code
    return env


async def prepare_held(cache: FirmwareCache, downloaded: Path, image: Image,
                       device: DeviceConfig) -> Prepared:
    """:func:`prepare` for a cache file the caller holds; the result's image is held too.

    The caller releases ``prepared.image`` (and, when it differs, still its
    ``downloaded``). A download that fails its checksum is removed from the
    cache: the next job downloads it again.
    """
    derived = cache.path_for(image.sha256.lower(), raw_name(image.name))
    for _ in range(2):
        try:
            prepared = await asyncio.to_thread(prepare, downloaded, image, device, derived)
        except PrepError as exc:
            if exc.checksum:
                await asyncio.to_thread(downloaded.unlink, missing_ok=True)
            raise
        if prepared.image == downloaded or cache.hold(prepared.image):
            return prepared
        # evicted between the rename and the hold: decompress once more
    raise PrepError(f"{derived}: removed from the firmware cache while being prepared "
                    "(cache too small?)")
