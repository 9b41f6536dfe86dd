"""Unpack a build artifact (zip) without trusting it.

Refused as a whole (``ArtifactRejected``): not a zip, too many members, a
member path that is absolute or climbs out (``..``), two members with the
same file name, more unpacked bytes than allowed or a member that inflates
beyond the allowed ratio (zip bombs: counted on the bytes actually inflated,
not on the sizes the zip header claims), a corrupt member. Only plain file
names are kept (directories are flattened); a ``profiles.json`` is read (bounded)
for the profile of each image. Synchronous: call it in a thread.
"""

from __future__ import annotations

import hashlib
import lzma
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec

from wrtci.services.trigger.images import SAFE_FILE_NAME

CHUNK = 1024 * 1024
MAX_PROFILES_JSON = 16 * 1024 * 1024
RATIO_FLOOR = 1024 * 1024
"""Members smaller than this are never judged by their ratio."""


class ArtifactRejected(ValueError):
    pass


CORRUPT = (zipfile.BadZipFile, zlib.error, lzma.LZMAError, EOFError, RuntimeError, OSError)
"""What reading a member can raise on bad data: each decompressor has its own
(bz2 raises OSError, lzma LZMAError; zipfile refuses an unknown compression
method with a RuntimeError subclass). Writing is kept outside, so a full disk
is not a bad artifact."""


class UnpackLimits(msgspec.Struct, frozen=True):
    max_total: int
    max_members: int
    max_ratio: float


class Unpacked(msgspec.Struct, frozen=True):
    name: str
    path: Path
    size: int
    sha256: str


def _check_path(name: str) -> None:
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or ".." in parts or ":" in parts[0]:
        raise ArtifactRejected(f"member path {name!r} leaves the artifact")


def unpack(zip_path: Path, dest: Path, limits: UnpackLimits,
           wanted: Callable[[str], bool]) -> tuple[list[Unpacked], bytes | None]:
    """The wanted files (flattened into ``dest``) and the artifact's profiles.json."""
    try:
        archive = zipfile.ZipFile(zip_path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise ArtifactRejected(f"not a zip file: {exc}") from exc
    with archive:
        infos = archive.infolist()
        if len(infos) > limits.max_members:
            raise ArtifactRejected(f"{len(infos)} members, at most {limits.max_members}")
        for info in infos:
            _check_path(info.filename)
        dest.mkdir(parents=True, exist_ok=True)
        files: list[Unpacked] = []
        profiles: bytes | None = None
        budget = [limits.max_total]
        for info in infos:
            if info.is_dir():
                continue
            base = info.filename.rsplit("/", 1)[-1]
            if base == "profiles.json":
                profiles = _read_small(archive, info)
                continue
            if not SAFE_FILE_NAME.match(base) or not wanted(base):
                continue
            if any(f.name == base for f in files):
                raise ArtifactRejected(f"two members named {base!r}")
            files.append(_extract(archive, info, dest / base, limits, budget))
    return files, profiles


def _read_small(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    try:
        with archive.open(info) as src:
            data = src.read(MAX_PROFILES_JSON + 1)
    except CORRUPT as exc:
        raise ArtifactRejected(f"{info.filename}: corrupt: {exc}") from exc
    if len(data) > MAX_PROFILES_JSON:
        raise ArtifactRejected(f"{info.filename} is over {MAX_PROFILES_JSON} bytes")
    return data


def _chunks(archive: zipfile.ZipFile, info: zipfile.ZipInfo) -> Iterator[bytes]:
    """The member's inflated bytes; bad data is ``ArtifactRejected``."""
    try:
        with archive.open(info) as src:
            while chunk := src.read(CHUNK):
                yield chunk
    except CORRUPT as exc:
        raise ArtifactRejected(f"{info.filename}: corrupt: {exc}") from exc


def _extract(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path,
             limits: UnpackLimits, budget: list[int]) -> Unpacked:
    digest = hashlib.sha256()
    size = 0
    packed = max(info.compress_size, 1)
    with target.open("wb") as out:
        for chunk in _chunks(archive, info):
            size += len(chunk)
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise ArtifactRejected(f"unpacks to more than {limits.max_total} bytes")
            if size > RATIO_FLOOR and size / packed > limits.max_ratio:
                raise ArtifactRejected(
                    f"{info.filename} inflates more than {limits.max_ratio:g} times")
            digest.update(chunk)
            out.write(chunk)
    return Unpacked(target.name, target, size, digest.hexdigest())
