"""Buildbot's build-finished notification -> which firmware it produced.

Buildbot's ``HttpStatusPush`` posts the build as JSON: ``complete``,
``results`` (0 success, 1 warnings, 2 failure, ...), ``builder.name``, ``url``
and ``properties`` as ``{name: [value, source]}``. OpenWrt's phase-1 builders
build one target each and upload its images and profiles.json to the
downloads server before the build ends; the notification says where:

- ``tag`` ``v23.05.5``            -> ``releases/23.05.5``
- branch ``main`` / ``master``    -> ``snapshots``
- branch ``openwrt-23.05``        -> ``releases/23.05-SNAPSHOT``

The firmware is then read from that profiles.json exactly as the official
scanner reads it, so it gets the same firmware id: the same images announced
by buildbot first and by the next scan later are one firmware, one event.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from wrtci.services.trigger.official import TARGET_RE, Release, VersionsIndex

SUCCESS_RESULTS = (0, 1)
"""SUCCESS and WARNINGS: the images were built and uploaded."""

_BRANCH_RE = re.compile(r"^openwrt-(\d+\.\d+)$")
_TAG_RE = re.compile(r"^v?(\d+\.\d+\.\d+(?:-rc\d+)?)$")


class BadNotification(ValueError):
    pass


class Builder(msgspec.Struct, frozen=True):
    name: str = ""


class BuildNotification(msgspec.Struct, frozen=True):
    buildid: int
    number: int
    complete: bool = True
    results: int | None = None
    url: str | None = None
    builder: Builder | None = None
    properties: dict[str, list[Any]] = {}

    def prop(self, name: str) -> str | None:
        value = self.properties.get(name)
        if value and isinstance(value[0], str) and value[0]:
            return value[0]
        return None

    @property
    def succeeded(self) -> bool:
        return self.complete and self.results in SUCCESS_RESULTS

    @property
    def target(self) -> str:
        """``target/subtarget``: the ``target`` property, else the builder name's tail."""
        candidate = self.prop("target") or (self.builder.name if self.builder else "")
        candidate = candidate.rsplit("_", 1)[-1] if "/" in candidate else candidate
        if not TARGET_RE.match(candidate):
            raise BadNotification(f"cannot tell the target from {candidate!r}")
        return candidate


def decode(body: bytes) -> BuildNotification:
    try:
        return msgspec.json.decode(body, type=BuildNotification)
    except msgspec.DecodeError as exc:
        raise BadNotification(f"not a buildbot build: {exc}") from exc


def _channel_of(version_prefix: str, versions: VersionsIndex | None) -> str:
    """stable / oldstable / upcoming if the index names that version line, else release."""
    for channel in ("stable", "oldstable", "upcoming"):
        version = getattr(versions, f"{channel}_version", None) if versions else None
        if version and (version == version_prefix or version.startswith(version_prefix + ".")):
            return channel
    return "release"


def release_of(build: BuildNotification, versions: VersionsIndex | None) -> Release:
    tag = build.prop("tag")
    if tag:
        match = _TAG_RE.match(tag)
        if not match:
            raise BadNotification(f"unknown tag {tag!r}")
        return Release(_channel_of(match[1], versions), f"releases/{match[1]}")
    branch = build.prop("branch")
    if branch in ("main", "master"):
        return Release("snapshot", "snapshots")
    match = _BRANCH_RE.match(branch or "")
    if not match:
        raise BadNotification(f"unknown branch {branch!r}")
    return Release(_channel_of(match[1], versions), f"releases/{match[1]}-SNAPSHOT")


def matches_revision(build: BuildNotification, version_code: str) -> bool:
    """Whether profiles.json (``r24106-10cc5fcd00``) is the build's commit (``got_revision``)."""
    got = build.prop("got_revision")
    if not got:
        return True
    short = version_code.rsplit("-", 1)[-1]
    return bool(short) and got.startswith(short)
