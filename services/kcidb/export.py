"""The stored record as KCIDB v5 (checkouts, builds, tests, issues, incidents).

The tables already follow KCIDB; this maps rows (typed, see ``kcidb_model``)
to KCIDB objects: fields KCIDB constrains (commit hashes, URLs, test paths)
only when they fit, the wrtci-only columns under ``misc``.

- **Origin.** Ids in the database start with the store's namespace
  (``wrtci:``). The KCIDB origin is ``[kcidb] origin``: every id and reference
  is re-prefixed with it here, at the border, so one site may submit as
  ``openwrt`` while its database keeps its own ids.
- **log_url** of a test is the API's log route of its job attempt
  (``{public_url}/api/v1/jobs/{job}/attempts/{n}/log``): stable, no credentials,
  independent of where object storage lives.
- **boot** test: one per finished attempt, synthesised from ``job_attempts``
  (id ``<job>:<attempt>:boot``), so a firmware that never booted shows as a
  boot failure; log-analysis incidents of an attempt without a failed test
  point at it.
- ``environment.misc.platform`` is the device type (the dashboard's hardware).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from urllib.parse import quote

import asyncpg
import msgspec

from wrtci.services.db.rows import columns_of, fetch_rows
from wrtci.services.firmware_store import ORIGIN as STORE_NAMESPACE
from wrtci.services.kcidb import model as m

KCIDB_MAJOR = 5
KCIDB_MINOR = 3
"""The newest v5 minor this module writes (and kcidb-io's LATEST schema knows)."""
KCIDB_MINORS = range(KCIDB_MINOR + 1)
KINDS = ("checkouts", "builds", "tests", "issues", "incidents")
BOOT_PATH = "boot"

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_GIT_URL_RE = re.compile(r"^https://\S+$")
_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
_PATH_PART_RE = re.compile(r"[^a-zA-Z0-9_-]+")
_ARCH_RE = re.compile(r"[^a-z0-9_]+")
EXCERPT_MAX = 16384

# Why an attempt ended, as the status of its boot test.
_NEVER_BOOTED = frozenset({"download_failed", "checksum_mismatch", "no_healthy_device"})


class Exporter(msgspec.Struct, kw_only=True, frozen=True):
    """How rows become KCIDB objects for one site."""

    origin: str = "wrtci"
    public_url: str | None = None
    """Base URL of the wrtci API as KCIDB readers reach it; no ``log_url`` without it."""

    def id(self, stored: str) -> str:
        """A stored id (``<namespace>:...``) with this site's KCIDB origin."""
        _namespace, sep, rest = stored.partition(":")
        return f"{self.origin}:{rest}" if sep else f"{self.origin}:{stored}"

    def stored(self, kcidb_id: str) -> str:
        """The stored id of an exported one (the inverse of ``id``)."""
        _origin, sep, rest = kcidb_id.partition(":")
        return f"{STORE_NAMESPACE}:{rest}" if sep and _origin == self.origin else kcidb_id

    def log_url(self, job_id: str, attempt: int) -> str | None:
        if not self.public_url:
            return None
        return (f"{self.public_url.rstrip('/')}/api/v1/jobs/{quote(job_id, safe='')}"
                f"/attempts/{attempt}/log")

    # -- objects --------------------------------------------------------------------

    def checkout(self, row: m.CheckoutRow) -> m.Checkout:
        misc = dict(row.misc)
        misc.update(_present(source_kind=row.source_kind, channel=row.channel,
                             version=row.version, revision=row.revision, state=row.state,
                             wrtci_id=row.id))
        commit = row.git_commit_hash
        if commit and not _COMMIT_RE.match(commit):
            misc["git_commit_hash"] = commit  # abbreviated hashes are not KCIDB hashes
            commit = None
        repo = row.git_repository_url
        patchset = row.patchset_hash
        return m.Checkout(
            id=self.id(row.id), origin=self.origin, tree_name=row.tree_name,
            git_repository_url=repo if repo and _GIT_URL_RE.match(repo) else None,
            git_commit_hash=commit,
            git_commit_name=row.git_commit_name or row.revision,
            git_repository_branch=row.git_repository_branch,
            patchset_hash=patchset if patchset is not None and (
                patchset == "" or _SHA256_RE.match(patchset)) else None,
            comment=row.comment or f"OpenWrt {row.version} ({row.channel})",
            start_time=_utc(row.start_time or row.created_at),
            log_url=_url(row.log_url), log_excerpt=_excerpt(row.log_excerpt),
            valid=row.valid, misc=misc)

    def build(self, row: m.BuildRow) -> m.Build:
        misc = dict(row.misc)
        misc.update(_present(target=row.target, subtarget=row.subtarget, profile=row.profile,
                             image_name=row.image_name, image_type=row.image_type,
                             filesystem=row.filesystem, sha256=row.sha256, size=row.size))
        url = _url(row.url)
        return m.Build(
            id=self.id(row.id), checkout_id=self.id(row.checkout_id), origin=self.origin,
            comment=row.comment or row.image_name, start_time=_utc(row.start_time),
            duration=row.duration, architecture=_architecture(row),
            command=row.command, compiler=row.compiler,
            output_files=[m.Resource(name=row.image_name, url=url)] if url else [],
            config_name=f"{row.target}/{row.subtarget}/{row.profile or '*'}",
            config_url=_url(row.config_url), log_url=_url(row.log_url),
            log_excerpt=_excerpt(row.log_excerpt),
            # Published firmware images are builds that succeeded.
            status=row.status or "PASS", misc=misc)

    def _environment(self, device_type: str, lab: str | None,
                     device: str | None) -> m.Environment:
        return m.Environment(
            comment=f"{lab or '?'}/{device or '?'} ({device_type})",
            misc=m.EnvironmentMisc(platform=device_type, device_type=device_type, lab=lab,
                                   device=device))

    def test(self, row: m.TestRow) -> m.Test:
        path = kcidb_path(row.path)
        misc = dict(row.misc)
        misc.update(_present(job_id=row.job_id, attempt=row.attempt,
                             device_type=row.device_type, lab=row.lab, device=row.device,
                             pytest_id=row.path if path != row.path else None))
        return m.Test(
            id=self.id(row.id), build_id=self.id(row.build_id), origin=self.origin,
            environment=self._environment(row.device_type, row.lab, row.device),
            path=path, comment=row.comment,
            log_url=self.log_url(row.job_id, row.attempt) if row.attempt_log_key else None,
            log_excerpt=_excerpt(row.log_excerpt), status=row.status,
            start_time=_utc(row.start_time), duration=row.duration, misc=misc)

    def boot_test(self, row: m.AttemptRow) -> m.Test | None:
        status = boot_status(row)
        if status is None:
            return None
        duration = None
        if row.started_at and row.finished_at and row.tests == 0:
            duration = (row.finished_at - row.started_at).total_seconds()
        return m.Test(
            id=self.id(boot_test_id(row.job_id, row.attempt)), build_id=self.id(row.build_id),
            origin=self.origin,
            environment=self._environment(row.device_type, row.lab, row.device),
            path=BOOT_PATH, comment=row.error_message if status != "PASS" else None,
            log_url=self.log_url(row.job_id, row.attempt) if row.log_key else None,
            status=status, start_time=_utc(row.started_at), duration=duration,
            misc=_present(job_id=row.job_id, attempt=row.attempt, device_type=row.device_type,
                          lab=row.lab, device=row.device, error_code=row.error_code))

    def issue(self, row: m.IssueRow) -> m.Issue:
        culprit = m.Culprit(code=row.culprit_code, tool=row.culprit_tool,
                            harness=row.culprit_harness)
        return m.Issue(
            id=self.id(row.id), version=row.version, origin=self.origin,
            report_url=_url(row.report_url), report_subject=row.report_subject,
            culprit=culprit if culprit != m.Culprit() else None, comment=row.comment,
            misc=row.misc)

    def incident(self, row: m.IncidentRow) -> m.Incident:
        test_id, build_id = row.test_id, row.build_id
        job_id, attempt = row.misc.get("job_id"), row.misc.get("attempt")
        if test_id is None and isinstance(job_id, str) and isinstance(attempt, int):
            # Found in the console log of an attempt that ran no test: its boot failed.
            test_id, build_id = boot_test_id(job_id, attempt), None
        return m.Incident(
            id=self.id(row.id), origin=self.origin, issue_id=self.id(row.issue_id),
            issue_version=row.issue_version,
            build_id=self.id(build_id) if build_id else None,
            test_id=self.id(test_id) if test_id else None, present=row.present,
            comment=row.comment, misc=row.misc)


def boot_test_id(job_id: str, attempt: int) -> str:
    return f"{job_id}:{attempt}:{BOOT_PATH}"


def boot_status(row: m.AttemptRow) -> m.Status | None:
    """Did the firmware boot in this attempt? None: the attempt says nothing about it."""
    if row.tests or row.result in ("pass", "fail", "skip"):
        return "PASS"  # tests ran, so the device booted
    code = row.error_code
    if code == "boot_failed":
        return "FAIL"
    if code == "test_suite_error":
        return "PASS"
    if code == "cancelled":
        return None
    if code in _NEVER_BOOTED:
        return "MISS"
    return "ERROR"  # timeout, lab lost, infrastructure: unknown whether it would boot


def _architecture(row: m.BuildRow) -> str:
    """OpenWrt's package architecture (mips_24kc, x86_64) when known, else the target."""
    if row.architecture and _ARCH_RE.sub("_", row.architecture) == row.architecture:
        return row.architecture
    return _ARCH_RE.sub("_", row.target.lower())


def _present(**values: object) -> dict[str, object]:
    return {k: v for k, v in values.items() if v is not None}


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    return value.astimezone(dt.UTC) if value else None


def _url(value: str | None) -> str | None:
    return value if value and _URL_RE.match(value) else None


def _excerpt(value: str | None) -> str | None:
    return value[-EXCERPT_MAX:] if value else None


def kcidb_path(path: str) -> str:
    """A pytest id as a KCIDB test path: dot-separated ``[a-zA-Z0-9_-]`` parts."""
    parts = [_PATH_PART_RE.sub("_", part).strip("_") for part in path.split(".")]
    return ".".join(part for part in parts if part)


# -- selecting and loading -----------------------------------------------------------------


class Selection(msgspec.Struct, kw_only=True):
    """Stored ids of the objects of one KCIDB document (boot tests by their synthetic id)."""

    checkouts: set[str] = msgspec.field(default_factory=set)
    builds: set[str] = msgspec.field(default_factory=set)
    tests: set[str] = msgspec.field(default_factory=set)
    issues: set[tuple[str, int]] = msgspec.field(default_factory=set)
    incidents: set[str] = msgspec.field(default_factory=set)

    def __len__(self) -> int:
        return sum(len(getattr(self, kind)) for kind in KINDS)


def _boot_key(test_id: str) -> tuple[str, int] | None:
    job_id, _, rest = test_id.rpartition(":")
    if rest != BOOT_PATH:
        return None
    job_id, _, attempt = job_id.rpartition(":")
    return (job_id, int(attempt)) if job_id and attempt.isdigit() else None


_CHECKOUTS = f"""SELECT {columns_of(m.CheckoutRow)}
  FROM checkouts WHERE id = ANY($1::text[]) ORDER BY id"""
_BUILDS = f"""SELECT {columns_of(m.BuildRow)}
  FROM builds WHERE id = ANY($1::text[]) ORDER BY id"""
_TESTS = f"""SELECT {columns_of(m.TestRow, "t", attempt_log_key="a.log_key")}
  FROM tests t
  LEFT JOIN job_attempts a ON a.job_id = t.job_id AND a.attempt = t.attempt
 WHERE t.id = ANY($1::text[]) ORDER BY t.id"""
_ATTEMPTS = f"""SELECT {columns_of(
    m.AttemptRow, "a", build_id="j.build_id", device_type="j.device_type",
    tests="(SELECT count(*) FROM tests t WHERE t.job_id = a.job_id AND t.attempt = a.attempt)")}
  FROM job_attempts a JOIN jobs j ON j.id = a.job_id
  JOIN unnest($1::text[], $2::int[]) AS k(job_id, attempt)
    ON k.job_id = a.job_id AND k.attempt = a.attempt
 WHERE a.state = 'done' ORDER BY a.job_id, a.attempt"""
_INCIDENTS = f"""SELECT {columns_of(m.IncidentRow)}
  FROM incidents WHERE id = ANY($1::text[]) ORDER BY id"""
_ISSUES = f"""SELECT {columns_of(m.IssueRow, "i")}
  FROM issues i JOIN unnest($1::text[], $2::int[]) AS k(id, version)
    ON k.id = i.id AND k.version = i.version ORDER BY i.id, i.version"""


async def load(conn: asyncpg.Connection, selection: Selection, exporter: Exporter,
               minor: int = KCIDB_MINOR) -> m.Document:
    """The selected objects as one KCIDB document, each list sorted by id."""
    boots = sorted(k for k in map(_boot_key, selection.tests) if k is not None)
    attempts = await fetch_rows(conn, m.AttemptRow, _ATTEMPTS, [k[0] for k in boots],
                                [k[1] for k in boots]) if boots else []
    tests = [exporter.test(r) for r in await fetch_rows(conn, m.TestRow, _TESTS,
                                                         sorted(selection.tests))]
    tests += [t for t in map(exporter.boot_test, attempts) if t is not None]
    issue_keys = sorted(selection.issues)
    return m.Document(
        version=m.Version(major=KCIDB_MAJOR, minor=minor),
        checkouts=[exporter.checkout(r) for r in await fetch_rows(
            conn, m.CheckoutRow, _CHECKOUTS, sorted(selection.checkouts))],
        builds=[exporter.build(r) for r in await fetch_rows(
            conn, m.BuildRow, _BUILDS, sorted(selection.builds))],
        tests=sorted(tests, key=lambda t: t.id),
        issues=[exporter.issue(r) for r in await fetch_rows(
            conn, m.IssueRow, _ISSUES, [k[0] for k in issue_keys], [k[1] for k in issue_keys])
        ] if issue_keys else [],
        incidents=[exporter.incident(r) for r in await fetch_rows(
            conn, m.IncidentRow, _INCIDENTS, sorted(selection.incidents))])


async def select(conn: asyncpg.Connection, test_ids: Iterable[str] = (),
                 build_ids: Iterable[str] = (),
                 attempts: Iterable[tuple[str, int]] = ()) -> Selection:
    """Tests, builds and finished attempts (their boot tests), with everything they hang
    on and every incident on them."""
    selection = Selection(tests=set(test_ids), builds=set(build_ids))
    attempt_keys = set(attempts)
    for row in await conn.fetch(
            "SELECT DISTINCT job_id, attempt FROM tests WHERE id = ANY($1::text[])",
            list(selection.tests)):
        attempt_keys.add((row["job_id"], row["attempt"]))
    attempt_keys |= {k for k in map(_boot_key, selection.tests) if k is not None}
    jobs = [k[0] for k in attempt_keys]
    numbers = [k[1] for k in attempt_keys]
    for row in await conn.fetch(
            """SELECT a.job_id, a.attempt, j.build_id FROM job_attempts a
                 JOIN jobs j ON j.id = a.job_id
                 JOIN unnest($1::text[], $2::int[]) AS k(job_id, attempt)
                   ON k.job_id = a.job_id AND k.attempt = a.attempt
                WHERE a.state = 'done'""", jobs, numbers):
        selection.tests.add(boot_test_id(row["job_id"], row["attempt"]))
        selection.builds.add(row["build_id"])
    for row in await conn.fetch(
            """SELECT DISTINCT b.id, b.checkout_id FROM builds b
                WHERE b.id = ANY($2::text[])
                   OR b.id IN (SELECT build_id FROM tests WHERE id = ANY($1::text[]))""",
            list(selection.tests), list(selection.builds)):
        selection.builds.add(row["id"])
        selection.checkouts.add(row["checkout_id"])
    for row in await conn.fetch(
            """SELECT i.id, i.issue_id, i.issue_version FROM incidents i
                LEFT JOIN unnest($3::text[], $4::int[]) AS k(job_id, attempt)
                  ON k.job_id = i.misc->>'job_id' AND k.attempt = (i.misc->>'attempt')::int
                WHERE i.test_id = ANY($1::text[]) OR i.build_id = ANY($2::text[])
                   OR k.job_id IS NOT NULL""",
            list(selection.tests), list(selection.builds), jobs, numbers):
        selection.incidents.add(row["id"])
        selection.issues.add((row["issue_id"], row["issue_version"]))
    return selection


async def export_firmware(conn: asyncpg.Connection, firmware_id: str, exporter: Exporter,
                          minor: int = KCIDB_MINOR) -> m.Document | None:
    if await conn.fetchval("SELECT 1 FROM checkouts WHERE id = $1", firmware_id) is None:
        return None
    tests = await conn.fetch(
        "SELECT t.id FROM tests t JOIN builds b ON b.id = t.build_id "
        "WHERE b.checkout_id = $1", firmware_id)
    builds = await conn.fetch("SELECT id FROM builds WHERE checkout_id = $1", firmware_id)
    attempts = await conn.fetch(
        "SELECT a.job_id, a.attempt FROM job_attempts a JOIN jobs j ON j.id = a.job_id "
        "WHERE j.checkout_id = $1", firmware_id)
    selection = await select(conn, [r["id"] for r in tests], [r["id"] for r in builds],
                             [(r["job_id"], r["attempt"]) for r in attempts])
    selection.checkouts.add(firmware_id)
    return await load(conn, selection, exporter, minor)


async def export_range(conn: asyncpg.Connection, since: dt.datetime, until: dt.datetime,
                       exporter: Exporter, minor: int = KCIDB_MINOR) -> m.Document:
    """Everything about the tests stored, and the attempts finished, in [since, until)."""
    tests = await conn.fetch(
        "SELECT id FROM tests WHERE ingested_at >= $1 AND ingested_at < $2", since, until)
    attempts = await conn.fetch(
        """SELECT job_id, attempt FROM job_attempts
            WHERE state = 'done' AND finished_at >= $1 AND finished_at < $2""", since, until)
    selection = await select(conn, [r["id"] for r in tests],
                             attempts=[(r["job_id"], r["attempt"]) for r in attempts])
    return await load(conn, selection, exporter, minor)
