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

What the server says is checked before it is believed:

- a version name from ``.versions.json`` must look like a release directory
  (``23.05.5``, ``24.10.0-rc6``), so ``../snapshots`` never becomes a release;
- ``profiles.json``'s ``version_number`` must be its directory's release
  (``SNAPSHOT`` under ``snapshots/``);
- one image with a bad name or digest is refused alone, not its whole target;
- a profile added later to a target already announced is announced again (the
  event carries every image; the scheduler's jobs are deterministic, so only the
  new profiles' device types get new jobs);
- an image whose sha256 changes at the same ``version_code`` is refused, logged
  once per new digest: the firmware keeps the digest it was recorded with, and
  the labs keep checking the file against it. A release never changes its files
  without a new revision; when the buildbot rebuilds a snapshot at the same
  revision, the changed file is not the firmware that was announced, and wrtci
  tests it when it comes with its own revision.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re

import asyncpg
import msgspec

from wrtci.core.runtime import EventPublisher
from wrtci.proto.events import FirmwareDiscoveredData
from wrtci.proto.model import Image, SourceKind
from wrtci.proto.subjects import PriorityClass
from wrtci.services.trigger.config import OfficialConfig
from wrtci.services.trigger.httpcache import ConditionalFetcher, FetchError, NotFound
from wrtci.services.trigger.images import (
    PROFILE_RE,
    SAFE_FILE_NAME,
    discovered_event_id,
    image_id,
    official_firmware_id,
)
from wrtci.services.trigger.record import (
    INFRASTRUCTURE_ERRORS,
    Outcome,
    is_announced,
    record_and_announce,
)

log = logging.getLogger(__name__)

GIT_REPOSITORY = "https://git.openwrt.org/openwrt/openwrt.git"

CHANNEL_PRIORITY = {
    "snapshot": PriorityClass.SNAPSHOT,
    "stable": PriorityClass.STABLE,
    "oldstable": PriorityClass.OLDSTABLE,
    "upcoming": PriorityClass.STABLE,
}

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
VERSION_RE = re.compile(r"^[0-9]{2}\.[0-9]{2}\.[0-9]{1,3}(-rc[0-9]{1,3})?$")
"""A release directory name on the downloads server: 23.05.5, 24.10.0-rc6."""
SNAPSHOT_VERSION = "SNAPSHOT"
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
    def version(self) -> str:
        """The version_number its profiles.json files must carry."""
        return SNAPSHOT_VERSION if self.path == "snapshots" else self.path.removeprefix("releases/")

    @property
    def priority_class(self) -> PriorityClass:
        return CHANNEL_PRIORITY.get(self.channel, PriorityClass.STABLE)


def releases_for(channels: list[str],
                 versions: VersionsIndex | None) -> tuple[list[Release], list[str]]:
    """The releases to scan, and why the other channels cannot be scanned."""
    found, problems = [], []
    for channel in channels:
        if channel == "snapshot":
            found.append(Release("snapshot", "snapshots"))
            continue
        if versions is None:
            problems.append(f"{channel}: no release list")
            continue
        version = getattr(versions, f"{channel}_version", None)
        if not version:
            log.info("channel has no release", extra={"channel": channel})
        elif not VERSION_RE.match(version):
            problems.append(f"{channel}: .versions.json names {version[:80]!r}, not a release")
        else:
            found.append(Release(channel, f"releases/{version}"))
    return found, problems


def firmware_from_profiles(
    index: ProfilesIndex, release: Release, base_url: str,
    source_kind: SourceKind = SourceKind.OFFICIAL,
) -> FirmwareDiscoveredData:
    """The firmware one target's profiles.json describes (validated)."""
    if not TARGET_RE.match(index.target):
        raise BadDocument(f"bad target {index.target!r}")
    if not index.version_code or "/" in index.version_code or ":" in index.version_code:
        raise BadDocument(f"bad version_code {index.version_code!r}")
    if index.version_number != release.version:
        raise BadDocument(f"version_number {index.version_number!r} in the directory of "
                          f"release {release.version!r}")
    target, subtarget = index.target.split("/")
    firmware_id = official_firmware_id(release.channel, index.version_number, index.version_code)
    directory = f"{base_url.rstrip('/')}/{release.path}/targets/{index.target}"
    images = []
    for profile_name, profile in sorted(index.profiles.items()):
        if not PROFILE_RE.match(profile_name):
            log.warning("refused profile: bad name", extra={
                "firmware_id": firmware_id, "target": index.target, "profile": profile_name[:100]})
            continue
        for entry in profile.images:
            problem = (f"bad sha256 {entry.sha256[:80]!r}" if not _SHA256_RE.match(entry.sha256)
                       else None if SAFE_FILE_NAME.match(entry.name) else "bad image name")
            if problem:
                log.warning("refused image", extra={
                    "firmware_id": firmware_id, "target": index.target, "profile": profile_name,
                    "image": entry.name[:200], "error": problem})
                continue
            images.append(Image(
                id=image_id(firmware_id, target, subtarget, profile_name, entry.name),
                target=target, subtarget=subtarget, profile=profile_name, name=entry.name,
                type=entry.type, filesystem=entry.filesystem, sha256=entry.sha256,
                url=f"{directory}/{entry.name}",
            ))
    if not images and index.profiles:
        raise BadDocument("no valid image in any profile")
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
    """Targets not recorded: not built for the release (404) or failed."""
    failed: list[str] = []
    """What could not be scanned and why (retried by the next scan)."""
    refused_images: int = 0
    """Images whose sha256 changed at the same version_code (see the module's docstring)."""

    @property
    def scanned(self) -> int:
        """Targets read to the end: announced, unchanged or known not to be built."""
        return self.targets - sum(1 for f in self.failed if f.startswith("target "))


class OfficialScanner:
    def __init__(self, config: OfficialConfig, fetcher: ConditionalFetcher,
                 pool: asyncpg.Pool, publisher: EventPublisher) -> None:
        self.config = config
        self.base = config.base_url.rstrip("/")
        self.fetcher = fetcher
        self.pool = pool
        self.publisher = publisher
        self._refused: set[tuple[str, str]] = set()
        """(build id, sha256) already logged as refused: logged once per process."""

    async def scan_once(self) -> ScanReport:
        report = ScanReport()
        versions = None
        if any(c != "snapshot" for c in self.config.channels):
            try:
                doc = await self.fetcher.get(f"{self.base}/.versions.json", keep_body=True)
                versions = decode(doc.body, VersionsIndex, doc.url)
                await self.fetcher.remember(doc, keep_body=True)
            except (FetchError, BadDocument) as exc:
                log.warning("cannot read the release list, scanning snapshots only",
                            extra={"error": str(exc)})
        releases, problems = releases_for(self.config.channels, versions)
        for problem in problems:
            log.warning("channel not scanned", extra={"error": problem})
        report.failed.extend(problems)
        work = []
        for release in releases:
            targets = await self._targets_of(release)
            if targets is None:
                report.failed.append(f"{release.channel}: no target list")
            for target in targets or ():
                work.append((release, target))
        report.targets = len(work)
        limit = asyncio.Semaphore(max(1, self.config.concurrency))

        async def one(release: Release, target: str) -> None:
            async with limit:
                await self._scan_target(release, target, report)

        await asyncio.gather(*(one(release, target) for release, target in work))
        log.info("official scan done", extra=msgspec.to_builtins(report))
        return report

    async def _targets_of(self, release: Release) -> list[str] | None:
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
            return None
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
            outcome = await self.announce(index, release, report=report)
            await self.fetcher.remember(doc)
        except NotFound:
            log.info("target not built for this release", extra=ids)
            report.skipped += 1
            return
        except (FetchError, BadDocument) as exc:
            log.warning("skipped target, retried next scan", extra={**ids, "error": str(exc)})
            report.skipped += 1
            report.failed.append(f"target {release.channel} {target}: {exc}")
            return
        except INFRASTRUCTURE_ERRORS as exc:
            # Recorded or not, the validator was not stored: the next scan redoes it.
            log.error("cannot record or announce, retried next scan",
                      extra={**ids, "error": repr(exc)})
            report.skipped += 1
            report.failed.append(f"target {release.channel} {target}: {exc!r}")
            return
        if outcome.recorded or outcome.new_builds:
            report.recorded += 1
        if outcome.published:
            report.announced += 1

    async def announce(self, index: ProfilesIndex, release: Release,
                       source_kind: SourceKind = SourceKind.OFFICIAL,
                       report: ScanReport | None = None) -> Outcome:
        data = firmware_from_profiles(index, release, self.base, source_kind)
        # The first announcement of a target also stands for its image set; a
        # set that grew later (a profile added) is announced under its own id.
        event_id = discovered_event_id(data.firmware_id, index.target)
        image_ids = "\n".join(sorted(image.id for image in data.images))
        data = await self._without_changed_digests(data, report)
        set_id = f"{event_id}:{hashlib.sha256(image_ids.encode()).hexdigest()[:16]}"
        first = not await is_announced(self.pool, event_id)
        return await record_and_announce(
            self.pool, self.publisher, data, event_id=event_id if first else set_id,
            architecture=index.arch_packages, also_marks=(set_id,) if first else (),
        )

    async def _without_changed_digests(self, data: FirmwareDiscoveredData,
                                       report: ScanReport | None) -> FirmwareDiscoveredData:
        recorded = dict(await self.pool.fetch(
            "SELECT id, sha256 FROM builds WHERE id = ANY($1::text[])",
            [image.id for image in data.images]))
        kept = []
        for image in data.images:
            known = recorded.get(image.id)
            if known is None or known == image.sha256:
                kept.append(image)
                continue
            if report is not None:
                report.refused_images += 1
            if (image.id, image.sha256) not in self._refused:
                self._refused.add((image.id, image.sha256))
                log.error("refused image: its sha256 changed without a new revision", extra={
                    "firmware_id": data.firmware_id, "build_id": image.id,
                    "recorded_sha256": known, "new_sha256": image.sha256})
        return msgspec.structs.replace(data, images=kept)
