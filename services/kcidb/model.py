"""KCIDB v5.3 objects as msgspec Structs: the export's types, and the rows they come from.

Unset optional fields are left out of the JSON (``omit_defaults``): KCIDB forbids
nulls, a missing field means "unknown". The row Structs name exactly the
columns ``kcidb.load`` selects, so a column that was not selected is an error
at once instead of a silent None.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

import msgspec

from wrtci.services.db.attempts import AttemptOutcome

Status = Literal["PASS", "FAIL", "ERROR", "SKIP", "MISS", "DONE"]


class _Object(msgspec.Struct, kw_only=True, omit_defaults=True):
    pass


class Version(_Object):
    major: int
    minor: int


class Resource(_Object):
    name: str
    url: str


class EnvironmentMisc(_Object):
    platform: str
    """The device type: the KernelCI dashboard groups hardware by ``platform``."""
    device_type: str
    lab: str | None = None
    device: str | None = None


class Environment(_Object):
    comment: str | None = None
    misc: EnvironmentMisc | None = None


class Culprit(_Object):
    code: bool | None = None
    tool: bool | None = None
    harness: bool | None = None


class _Reported(_Object, kw_only=True):
    """What every reported object has: its id, who reports it, a comment, the rest."""

    id: str
    origin: str
    comment: str | None = None
    misc: dict[str, Any] = {}


class _Logged(_Reported, kw_only=True):
    """Checkouts, builds and tests: when they started, and their log."""

    start_time: dt.datetime | None = None
    log_url: str | None = None
    log_excerpt: str | None = None


class _Run(_Logged, kw_only=True):
    """Builds and tests: how long they took and how they went."""

    duration: float | None = None
    status: Status | None = None


class Checkout(_Logged, kw_only=True):
    tree_name: str | None = None
    git_repository_url: str | None = None
    git_commit_hash: str | None = None
    git_commit_name: str | None = None
    git_repository_branch: str | None = None
    patchset_hash: str | None = None
    valid: bool | None = None


class Build(_Run, kw_only=True):
    checkout_id: str
    architecture: str | None = None
    command: str | None = None
    compiler: str | None = None
    output_files: list[Resource] = []
    config_name: str | None = None
    config_url: str | None = None


class Test(_Run, kw_only=True):
    __test__ = False  # not a pytest class

    build_id: str
    environment: Environment | None = None
    path: str | None = None


class Issue(_Reported, kw_only=True):
    version: int
    report_url: str | None = None
    report_subject: str | None = None
    culprit: Culprit | None = None


class Incident(_Reported, kw_only=True):
    issue_id: str
    issue_version: int
    build_id: str | None = None
    test_id: str | None = None
    present: bool | None = None


class Document(_Object):
    version: Version
    checkouts: list[Checkout] = []
    builds: list[Build] = []
    tests: list[Test] = []
    issues: list[Issue] = []
    incidents: list[Incident] = []

    def count(self, kind: str) -> int:
        return len(getattr(self, kind))


# -- rows, as ``kcidb.load`` selects them -------------------------------------------------


class CheckoutRow(msgspec.Struct, kw_only=True):
    id: str
    tree_name: str | None
    git_repository_url: str | None
    git_commit_hash: str | None
    git_commit_name: str | None
    git_repository_branch: str | None
    patchset_hash: str | None
    comment: str | None
    start_time: dt.datetime | None
    created_at: dt.datetime
    log_url: str | None
    log_excerpt: str | None
    valid: bool | None
    misc: dict[str, Any]
    source_kind: str
    channel: str
    version: str
    revision: str | None
    state: str


class BuildRow(msgspec.Struct, kw_only=True):
    id: str
    checkout_id: str
    comment: str | None
    start_time: dt.datetime | None
    duration: float | None
    architecture: str | None
    command: str | None
    compiler: str | None
    config_url: str | None
    log_url: str | None
    log_excerpt: str | None
    status: Status | None
    misc: dict[str, Any]
    target: str
    subtarget: str
    profile: str | None
    image_name: str
    image_type: str
    filesystem: str | None
    sha256: str
    size: int | None
    url: str | None


class TestRow(msgspec.Struct, kw_only=True):
    __test__ = False

    id: str
    build_id: str
    path: str
    comment: str | None
    log_excerpt: str | None
    status: Status
    start_time: dt.datetime | None
    duration: float | None
    misc: dict[str, Any]
    job_id: str
    attempt: int
    device_type: str
    lab: str | None
    device: str | None
    attempt_log_key: str | None


class AttemptRow(AttemptOutcome, kw_only=True):
    """A finished job attempt: the source of its ``boot`` test."""

    job_id: str
    attempt: int
    build_id: str
    device_type: str
    tests: int
    """How many pytest results the attempt stored."""


class IssueRow(msgspec.Struct, kw_only=True):
    id: str
    version: int
    report_url: str | None
    report_subject: str | None
    culprit_code: bool | None
    culprit_tool: bool | None
    culprit_harness: bool | None
    comment: str | None
    misc: dict[str, Any]


class IncidentRow(msgspec.Struct, kw_only=True):
    id: str
    issue_id: str
    issue_version: int
    build_id: str | None
    test_id: str | None
    present: bool | None
    comment: str | None
    misc: dict[str, Any]
