"""The lab's firmware cache: sha256-keyed, verified, bounded, safe with hostile job data."""

from __future__ import annotations

import asyncio

import pytest

from tests.lab_helpers import sha256_of
from wrtci.core.retry import Backoff
from wrtci.lab_daemon.firmware import ChecksumMismatch, DownloadError, FirmwareCache


def _serve(www, name: str, data: bytes) -> str:
    (www / name).write_bytes(data)
    return sha256_of(data)


class _Images:
    """a.bin, b.bin and c.bin of ``size`` bytes each (A, B, C) on the file server."""

    def __init__(self, file_server, size: int) -> None:
        self.base_url, www = file_server
        self.sha = {name: _serve(www, name, name[0].upper().encode() * size)
                    for name in ("a.bin", "b.bin", "c.bin")}

    async def fetch(self, cache: FirmwareCache, name: str):
        return await cache.fetch(f"{self.base_url}/{name}", self.sha[name], name)


async def test_a_sha256_that_is_a_path_never_leaves_the_cache(tmp_path):
    secret = tmp_path / "etc" / "shadow"
    secret.parent.mkdir()
    secret.write_text("root:x:")
    cache = FirmwareCache(tmp_path / "work" / "cache", max_bytes=1000)
    (tmp_path / "work" / "cache").mkdir(parents=True)
    assert cache.cached("../../etc", "shadow") is None  # not served as a "cached" image
    with pytest.raises(ChecksumMismatch, match="invalid sha256"):
        await cache.fetch("http://127.0.0.1:9/x", "../../etc", "shadow")


async def test_an_image_a_job_holds_is_not_evicted(file_server, tmp_path):
    images = _Images(file_server, 14)
    cache = FirmwareCache(tmp_path / "cache", max_bytes=20)
    a = await images.fetch(cache, "a.bin")  # a running job holds it
    b = await images.fetch(cache, "b.bin")  # over the limit now
    assert a.read_bytes() == b"A" * 14, "evicted while the job still boots it"
    cache.release(a)
    cache.release(b)
    c = await images.fetch(cache, "c.bin")
    assert not a.exists() and not b.exists() and c.is_file()  # released: the limit holds


async def test_a_cache_hit_makes_the_image_recently_used(file_server, tmp_path):
    images = _Images(file_server, 10)
    cache = FirmwareCache(tmp_path / "cache", max_bytes=25)
    for name in ("a.bin", "b.bin"):
        cache.release(await images.fetch(cache, name))
        await asyncio.sleep(0.01)  # distinct modification times
    hit = cache.cached(images.sha["a.bin"], "a.bin")  # a job for a.bin again: from the cache
    assert hit is not None
    cache.release(hit)
    await asyncio.sleep(0.01)
    cache.release(await images.fetch(cache, "c.bin"))
    assert hit.is_file()
    assert cache.cached(images.sha["b.bin"], "b.bin") is None  # the least recently used went


async def test_downloads_a_killed_daemon_left_are_removed(file_server, tmp_path):
    base_url, www = file_server
    sha = _serve(www, "a.bin", b"firmware")
    cache = FirmwareCache(tmp_path / "cache", max_bytes=1000)
    partial = tmp_path / "cache" / sha / ".download-x1y2"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(b"firm")  # kill -9 in the middle of a download
    assert cache.remove_partial_downloads() == 1
    assert not partial.exists()
    path = await cache.fetch(f"{base_url}/a.bin", sha, "a.bin")
    assert path.read_bytes() == b"firmware"
    assert [p.name for p in path.parent.iterdir()] == ["a.bin"]


async def test_two_devices_downloading_the_same_image_share_one_file(file_server, tmp_path):
    base_url, www = file_server
    sha = _serve(www, "a.bin", b"x" * 100_000)
    cache = FirmwareCache(tmp_path / "cache", max_bytes=10**6)
    first, second = await asyncio.gather(cache.fetch(f"{base_url}/a.bin", sha, "a.bin"),
                                         cache.fetch(f"{base_url}/a.bin", sha, "a.bin"))
    assert first == second and first.read_bytes() == b"x" * 100_000
    assert [p.name for p in first.parent.iterdir()] == ["a.bin"]


async def test_a_download_is_retried_inside_the_job_before_it_fails(file_server, tmp_path):
    """The downloads server answers 404 for a moment (an outage): the fetch waits it out."""
    base_url, www = file_server
    data = b"F" * 100
    cache = FirmwareCache(tmp_path / "cache", max_bytes=1000, download_attempts=3,
                          download_retry=Backoff(steps_s=(0.5,), jitter=0.0))

    async def server_back() -> None:
        await asyncio.sleep(0.2)  # the outage itself
        (www / "f.bin").write_bytes(data)
    back = asyncio.create_task(server_back())
    path = await cache.fetch(f"{base_url}/f.bin", sha256_of(data), "f.bin")
    await back
    assert path.read_bytes() == data
    failing = FirmwareCache(tmp_path / "cache2", max_bytes=1000, download_attempts=2,
                            download_retry=Backoff(steps_s=(0.05,), jitter=0.0))
    with pytest.raises(DownloadError, match="404"):
        await failing.fetch(f"{base_url}/missing.bin", sha256_of(b"x"), "missing.bin")
