"""A local stand-in for downloads.openwrt.org, the way nginx serves it.

Files come from a directory (the shared fixtures, or a generated mirror) and
can be replaced or added per test. Answers carry ``ETag`` and
``Last-Modified``; ``If-None-Match`` / ``If-Modified-Since`` get a 304 with no
body, unknown paths a 404. Every request is counted, with the body bytes sent,
so tests can tell that an unchanged rescan downloaded nothing. ``fail`` makes
a path answer an error status a number of times; ``hold`` keeps a path's
answer back until released (a scan caught in the middle).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections import Counter
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path

from aiohttp import web

LOOPBACK = "127.0.0.1"


class DownloadsServer:
    def __init__(self, root: Path | None = None) -> None:
        self.files: dict[str, tuple[bytes, float]] = {}
        self.requests: Counter[str] = Counter()
        self.bodies: Counter[str] = Counter()
        """Path -> number of 200 answers with a body."""
        self.body_bytes = 0
        self.failures: dict[str, list[int]] = {}
        self.holds: dict[str, asyncio.Event] = {}
        self.held: dict[str, asyncio.Event] = {}
        self._clock = 1_700_000_000.0
        if root is not None:
            self.add_tree(root)
        self._runner: web.AppRunner | None = None
        self.url = ""

    # -- content ------------------------------------------------------------------

    def put(self, path: str, body: bytes | str | dict) -> None:
        if isinstance(body, dict):
            body = json.dumps(body, indent=1)
        if isinstance(body, str):
            body = body.encode()
        self._clock += 60  # every change is a new Last-Modified, as on a real server
        self.files["/" + path.lstrip("/")] = (body, self._clock)

    def add_tree(self, root: Path) -> None:
        for file in sorted(root.rglob("*")):
            if file.is_file():
                self.put(str(file.relative_to(root)), file.read_bytes())

    def json(self, path: str) -> dict:
        return json.loads(self.files["/" + path.lstrip("/")][0])

    def fail(self, path: str, status: int, times: int = 1) -> None:
        self.failures["/" + path.lstrip("/")] = [status] * times

    def hold(self, path: str) -> asyncio.Event:
        """Hold answers to ``path`` back; returns the event set when a request arrives."""
        path = "/" + path.lstrip("/")
        self.holds[path] = asyncio.Event()
        self.held[path] = asyncio.Event()
        return self.held[path]

    def release(self, path: str) -> None:
        self.holds.pop("/" + path.lstrip("/")).set()

    def profile_body_downloads(self) -> int:
        return sum(n for path, n in self.bodies.items() if path.endswith("/profiles.json"))

    # -- HTTP -----------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.path
        self.requests[path] += 1
        if path in self.holds:
            self.held[path].set()
            await self.holds[path].wait()
        if self.failures.get(path):
            return web.Response(status=self.failures[path].pop(0), text="injected failure")
        if path not in self.files:
            return web.Response(status=404, text="404 Not Found")
        body, mtime = self.files[path]
        etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
        headers = {"ETag": etag, "Last-Modified": formatdate(mtime, usegmt=True)}
        if_none_match = request.headers.get("If-None-Match")
        if_modified_since = request.headers.get("If-Modified-Since")
        if if_none_match is not None:
            if etag in [tag.strip() for tag in if_none_match.split(",")]:
                return web.Response(status=304, headers=headers)
        elif if_modified_since is not None:
            try:
                since = parsedate_to_datetime(if_modified_since).timestamp()
            except (TypeError, ValueError):
                since = None
            if since is not None and mtime <= since:
                return web.Response(status=304, headers=headers)
        self.bodies[path] += 1
        self.body_bytes += len(body)
        content_type = "application/json" if path.endswith(".json") else None
        return web.Response(body=body, headers=headers, content_type=content_type)

    async def start(self) -> DownloadsServer:
        app = web.Application()
        app.router.add_route("GET", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{LOOPBACK}:{port}"
        return self

    async def stop(self) -> None:
        for event in self.holds.values():
            event.set()
        if self._runner is not None:
            await self._runner.cleanup()


# -- generated mirrors -------------------------------------------------------------------


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def profiles_json(target: str, version: str, revision: str, profiles: int) -> dict:
    """A profiles.json in the downloads-server format with ``profiles`` profiles."""
    t, s = target.split("/")
    prefix = "openwrt" if version == "SNAPSHOT" else f"openwrt-{version}"
    entries = {}
    for n in range(profiles):
        name = f"vendor_device-{n:03d}"
        image_prefix = f"{prefix}-{t}-{s}-{name}"
        entries[name] = {
            "device_packages": ["kmod-usb2"],
            "image_prefix": image_prefix,
            "images": [
                {"filesystem": "squashfs", "type": "sysupgrade",
                 "name": f"{image_prefix}-squashfs-sysupgrade.bin",
                 "sha256": _sha(f"{revision}{image_prefix}sysupgrade"),
                 "sha256_unsigned": _sha(f"{revision}{image_prefix}sysupgrade-u")},
                {"filesystem": "squashfs", "type": "factory",
                 "name": f"{image_prefix}-squashfs-factory.bin",
                 "sha256": _sha(f"{revision}{image_prefix}factory"),
                 "sha256_unsigned": _sha(f"{revision}{image_prefix}factory-u")},
                {"filesystem": "initramfs", "type": "kernel",
                 "name": f"{image_prefix}-initramfs-kernel.bin",
                 "sha256": _sha(f"{revision}{image_prefix}kernel"),
                 "sha256_unsigned": _sha(f"{revision}{image_prefix}kernel-u")},
            ],
            "supported_devices": [f"vendor,device-{n:03d}"],
            "titles": [{"model": f"Device {n}", "vendor": "Vendor"}],
        }
    return {
        "arch_packages": "mips_24kc",
        "default_packages": ["base-files", "busybox", "dropbear"],
        "metadata_version": 1,
        "profiles": entries,
        "source_date_epoch": 1727094886,
        "target": target,
        "version_code": revision,
        "version_number": version,
    }


def generated_targets(count: int) -> list[str]:
    return [f"gen{n // 4:02d}/sub{n % 4}" for n in range(count)]


def generate_mirror(server: DownloadsServer, *, targets: int, profiles: int,
                    stable: str = "24.10.0", revision: str = "r28427-6df0e3d02a",
                    snapshot_revision: str | None = None) -> list[str]:
    """A mirror with one stable release (and optionally snapshots) of ``targets`` targets."""
    names = generated_targets(targets)
    server.put(".versions.json", {"stable_version": stable, "oldstable_version": None,
                                  "upcoming_version": None, "versions_list": [stable]})
    server.put(f"releases/{stable}/.targets.json", {t: "mips_24kc" for t in names})
    for target in names:
        server.put(f"releases/{stable}/targets/{target}/profiles.json",
                   profiles_json(target, stable, revision, profiles))
    if snapshot_revision:
        server.put("snapshots/.targets.json", {t: "mips_24kc" for t in names})
        for target in names:
            server.put(f"snapshots/targets/{target}/profiles.json",
                       profiles_json(target, "SNAPSHOT", snapshot_revision, profiles))
    return names
