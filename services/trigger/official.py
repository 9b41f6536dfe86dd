"""Official releases and snapshots from the downloads server.

Layout read (as on downloads.openwrt.org)::

    /.versions.json                                   stable / oldstable / upcoming
    /releases/<v>/.targets.json, /snapshots/.targets.json   "target/subtarget": arch
    /releases/<v>/targets/<t>/<s>/profiles.json       images of every profile
    /snapshots/targets/<t>/<s>/profiles.json

A firmware is channel + version_number + version_code from profiles.json; a
snapshot target rebuilt at a new revision is a new firmware. Each target of a
firmware is announced on its own (event id ``...:<target>/<subtarget>``), since
targets appear on the server one by one. Release candidates
(``upcoming_version``) are channel ``upcoming`` and tested with the stable
priority: they are the next stable release.
"""

from __future__ import annotations

import asyncio
import logging
import re

import asyncpg
import msgspec

from core.runtime import EventPublisher
from proto.events import FirmwareDiscoveredData
from proto.model import Image, SourceKind
from proto.subjects import PriorityClass
from services.trigger.config import OfficialConfig
from services.trigger.httpcache import ConditionalFetcher, FetchError, NotFound
from services.trigger.images import (
    PROFILE_RE,
    SAFE_FILE_NAME,
    discovered_event_id,
    image_id,
    official_firmware_id,
)
from services.trigger.record import INFRASTRUCTURE_ERRORS, Outcome, record_and_announce

log = logging.getLogger(__name__)

GIT_REPOSITORY = "https://git.openwrt.org/openwrt/openwrt.git"

CHANNEL_PRIORITY = {
    "snapshot": PriorityClass.SNAPSHOT,
    "stable": PriorityClass.STABLE,
    "oldstable": PriorityClass.OLDSTABLE,
    "upcoming": PriorityClass.STABLE,
}

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
TARGET_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*/[a-z0-9][a-z0-9_.-]*$")


class BadDocument(ValueError):
    """A document that does not have the downloads-server shape."""


# -- the documents -----------------------------------------------------------------


class VersionsIndex(msgspec.Struct, frozen=True):
    stable_version: str | None = None
    oldstable_version: str | None = None
    upcoming_version: str | None = None


class ProfileImage(msgspec.Struct, frozen=True):
    name: str
    type: str
    sha256: str
    filesystem: str | None = None


class Profile(msgspec.Struct, frozen=True):
    images: list[ProfileImage] = []


class ProfilesIndex(msgspec.Struct, frozen=True):
    target: str
    version_number: str
    version_code: str
    profiles: dict[str, Profile]
    arch_packages: str | None = None


def decode(body: bytes | None, doc_type: type[msgspec.Struct], what: str):
    try:
        return msgspec.json.decode(body or b"", type=doc_type)
    except msgspec.DecodeError as exc:
        raise BadDocument(f"{what}: {exc}") from exc


class Release(msgspec.Struct, frozen=True):
    channel: str
    path: str
    """``snapshots`` or ``releases/<version>`` below the base URL."""

    @property
    def priority_class(self) -> PriorityClass:
        return CHANNEL_PRIORITY.get(self.channel, PriorityClass.STABLE)


def releases_for(channels: list[str], versions: VersionsIndex | None) -> list[Release]:
    found = []
    for channel in channels:
        if channel == "snapshot":
            found.append(Release("snapshot", "snapshots"))
            continue
        version = getattr(versions, f"{channel}_version", None) if versions else None
        if version:
            found.append(Release(channel, f"releases/{version}"))
        else:
            log.info("channel has no release", extra={"channel": channel})
    return found


def firmware_from_profiles(
    index: ProfilesIndex, release: Release, base_url: str,
    source_kind: SourceKind = SourceKind.OFFICIAL,
) -> FirmwareDiscoveredData:
    """The firmware one target's profiles.json describes (validated)."""
    if not TARGET_RE.match(index.target):
        raise BadDocument(f"bad target {index.target!r}")
    if not index.version_code or "/" in index.version_code or ":" in index.version_code:
        raise BadDocument(f"bad version_code {index.version_code!r}")
    if not index.version_number or "/" in index.version_number or ":" in index.version_number:
        raise BadDocument(f"bad version_number {index.version_number!r}")
    target, subtarget = index.target.split("/")
    firmware_id = official_firmware_id(release.channel, index.version_number, index.version_code)
    directory = f"{base_url.rstrip('/')}/{release.path}/targets/{index.target}"
    images = []
    for profile_name, profile in sorted(index.profiles.items()):
        if not PROFILE_RE.match(profile_name):
            raise BadDocument(f"bad profile name {profile_name!r}")
        for entry in profile.images:
            if not _SHA256_RE.match(entry.sha256):
                raise BadDocument(f"{profile_name}/{entry.name}: bad sha256 {entry.sha256!r}")
            if not SAFE_FILE_NAME.match(entry.name):
                raise BadDocument(f"{profile_name}: bad image name {entry.name!r}")
            images.append(Image(
                id=image_id(firmware_id, target, subtarget, profile_name, entry.name),
                target=target, subtarget=subtarget, profile=profile_name, name=entry.name,
                type=entry.type, filesystem=entry.filesystem, sha256=entry.sha256,
                url=f"{directory}/{entry.name}",
            ))
    major_minor = ".".join(index.version_number.split(".")[:2])
    return FirmwareDiscoveredData(
        firmware_id=firmware_id,
        source_kind=source_kind,
        priority_class=release.priority_class,
        channel=release.channel,
        version=index.version_number,
        revision=index.version_code,
        images=images,
        git_repository_url=GIT_REPOSITORY,
        git_branch="main" if release.channel == "snapshot" else f"openwrt-{major_minor}",
        url=f"{base_url.rstrip('/')}/{release.path}/",
    )


# -- the scanner -------------------------------------------------------------------


class ScanReport(msgspec.Struct):
    targets: int = 0
    unchanged: int = 0
    recorded: int = 0
    """Targets whose firmware or builds were new."""
    announced: int = 0
    skipped: int = 0
    """Targets that failed (logged; retried by the next scan)."""


class OfficialScanner:
    def __init__(self, config: OfficialConfig, fetcher: ConditionalFetcher,
                 pool: asyncpg.Pool, publisher: EventPublisher) -> None:
        self.config = config
        self.base = config.base_url.rstrip("/")
        self.fetcher = fetcher
        self.pool = pool
        self.publisher = publisher

    async def scan_once(self) -> ScanReport:
        report = ScanReport()
        try:
            doc = await self.fetcher.get(f"{self.base}/.versions.json", keep_body=True)
            versions = decode(doc.body, VersionsIndex, doc.url)
            await self.fetcher.remember(doc, keep_body=True)
        except (FetchError, BadDocument) as exc:
            if any(c != "snapshot" for c in self.config.channels):
                log.warning("cannot read the release list, scanning snapshots only",
                            extra={"error": str(exc)})
            versions = None
        work = []
        for release in releases_for(self.config.channels, versions):
            for target in await self._targets_of(release):
                work.append((release, target))
        report.targets = len(work)
        limit = asyncio.Semaphore(max(1, self.config.concurrency))

        async def one(release: Release, target: str) -> None:
            async with limit:
                await self._scan_target(release, target, report)

        await asyncio.gather(*(one(release, target) for release, target in work))
        log.info("official scan done", extra=msgspec.to_builtins(report))
        return report

    async def _targets_of(self, release: Release) -> list[str]:
        if self.config.targets:
            return list(self.config.targets)
        try:
            doc = await self.fetcher.get(f"{self.base}/{release.path}/.targets.json",
                                         keep_body=True)
            targets = decode(doc.body, dict[str, str], doc.url)
            await self.fetcher.remember(doc, keep_body=True)
        except (FetchError, BadDocument) as exc:
            log.warning("cannot read the target list, skipping the release",
                        extra={"channel": release.channel, "error": str(exc)})
            return []
        valid = sorted(t for t in targets if TARGET_RE.match(t))
        if len(valid) != len(targets):
            log.warning("ignored malformed target names", extra={"channel": release.channel})
        return valid

    async def _scan_target(self, release: Release, target: str, report: ScanReport) -> None:
        url = f"{self.base}/{release.path}/targets/{target}/profiles.json"
        ids = {"channel": release.channel, "target": target, "url": url}
        try:
            doc = await self.fetcher.get(url)
            if not doc.changed:
                report.unchanged += 1
                return
            index = decode(doc.body, ProfilesIndex, url)
            if index.target != target:
                raise BadDocument(f"{url} describes target {index.target!r}")
            outcome = await self.announce(index, release)
            await self.fetcher.remember(doc)
        except NotFound:
            log.info("target not built for this release", extra=ids)
            report.skipped += 1
            return
        except (FetchError, BadDocument) as exc:
            log.warning("skipped target, retried next scan", extra={**ids, "error": str(exc)})
            report.skipped += 1
            return
        except INFRASTRUCTURE_ERRORS as exc:
            # Recorded or not, the validator was not stored: the next scan redoes it.
            log.error("cannot record or announce, retried next scan",
                      extra={**ids, "error": repr(exc)})
            report.skipped += 1
            return
        if outcome.recorded or outcome.new_builds:
            report.recorded += 1
        if outcome.published:
            report.announced += 1

    async def announce(self, index: ProfilesIndex, release: Release,
                       source_kind: SourceKind = SourceKind.OFFICIAL) -> Outcome:
        data = firmware_from_profiles(index, release, self.base, source_kind)
        return await record_and_announce(
            self.pool, self.publisher, data,
            event_id=discovered_event_id(data.firmware_id, index.target),
            architecture=index.arch_packages,
        )
