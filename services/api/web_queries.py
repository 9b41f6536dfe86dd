"""What the web pages read beyond ``queries``: verdicts, names, the matrix, the fleet.

A *verdict* answers "did it work?" in one word, for a job and for a firmware:
``pass``, ``fail``, ``regression`` (a test passed on the previous firmware of
the channel and fails here), ``error`` (infrastructure), ``cancelled``,
``running`` (``queued`` / ``waiting`` for a job), ``none`` (a firmware with no jobs).
Read-only, like ``queries``.
"""

from __future__ import annotations

import datetime as dt

import asyncpg
import msgspec

from wrtci.services.api.queries import FIRMWARE_MATCH, JOB_EXPRS, JOB_SOURCE, FirmwareFilter
from wrtci.services.db.rows import Page, Where, as_structs, columns_of

VERDICTS = ("pass", "fail", "regression", "error", "cancelled", "running", "none")
VERDICT_LABELS = {"pass": "pass", "fail": "fail", "regression": "regressions",
                  "error": "infra error", "cancelled": "cancelled", "running": "running",
                  "none": "no jobs", "queued": "queued", "waiting": "waiting for a lab",
                  "skip": "skipped"}


class FirmwareLabel(msgspec.Struct, kw_only=True):
    """What a firmware's name is made of (``firmware_label``)."""

    id: str
    version: str
    revision: str | None
    channel: str
    source_kind: str
    state: str
    created_at: dt.datetime
    submitter: str | None
    image_name: str | None
    pr_repository: str | None
    pr_number: int | None
    pr_sha: str | None
    pr_title: str | None
    pr_url: str | None


class FirmwareRow(FirmwareLabel, kw_only=True):
    """A firmware as the lists show it: its job counts and its verdict."""

    jobs: int
    queued: int
    running: int
    passed: int
    failed: int
    errors: int
    cancelled: int
    regressions: int
    verdict: str


def firmware_label(row: FirmwareLabel) -> str:
    """A name people know: ``24.10.0 r28427-…``, ``PR #123 1a2b3c4d``, ``file.bin by alice``."""
    if row.source_kind == "github_pr" and row.pr_number is not None:
        return f"PR #{row.pr_number} {(row.pr_sha or '')[:8]}".strip()
    if row.source_kind == "upload":
        name = row.image_name or "upload"
        return f"{name} by {row.submitter}" if row.submitter else name
    return f"{row.version} {row.revision}" if row.revision else row.version


_LABEL_COLUMNS = columns_of(
    FirmwareLabel, "c", submitter="c.misc->>'submitter'",
    image_name="(SELECT min(b.image_name) FROM builds b WHERE b.checkout_id = c.id)",
    pr_repository="c.misc->'pull_request'->>'repository'",
    pr_number="(c.misc->'pull_request'->>'number')::bigint",
    pr_sha="c.misc->'pull_request'->>'head_sha'", pr_title="c.misc->'pull_request'->>'title'",
    pr_url="c.misc->'pull_request'->>'url'")

_VERDICT = """CASE WHEN jobs = 0 THEN 'none'
                   WHEN queued + running > 0 THEN 'running'
                   WHEN regressions > 0 THEN 'regression'
                   WHEN failed > 0 THEN 'fail'
                   WHEN errors > cancelled THEN 'error'
                   WHEN cancelled > 0 THEN 'cancelled'
                   ELSE 'pass' END"""


async def firmware_rows(conn: asyncpg.Connection, flt: FirmwareFilter,
                        page: Page) -> tuple[list[FirmwareRow], int]:
    """Newest first, each with its job counts and verdict, and the total that match."""
    where = Where().match(FIRMWARE_MATCH, flt)
    verdict = Where(where.args).add("verdict = {}", flt.verdict)
    rows = await conn.fetch(
        f"""WITH f AS (
              SELECT {_LABEL_COLUMNS},
                     count(j.id) AS jobs,
                     count(j.id) FILTER (WHERE j.state = 'queued') AS queued,
                     count(j.id) FILTER (WHERE j.state = 'running') AS running,
                     count(j.id) FILTER (WHERE j.result = 'pass') AS passed,
                     count(j.id) FILTER (WHERE j.result = 'fail') AS failed,
                     count(j.id) FILTER (WHERE j.result = 'error') AS errors,
                     count(j.id) FILTER (WHERE j.result = 'error'
                                           AND j.error_code = 'cancelled') AS cancelled,
                     (SELECT count(*) FROM regressions r
                       WHERE r.first_failing_checkout_id = c.id) AS regressions
                FROM checkouts c LEFT JOIN jobs j ON j.checkout_id = c.id
               WHERE {where}
               GROUP BY c.id),
            v AS (SELECT f.*, {_VERDICT} AS verdict FROM f)
            SELECT *, count(*) OVER () AS total FROM v
             WHERE {verdict} ORDER BY created_at DESC, id DESC
             LIMIT {where.param(page.limit)} OFFSET {where.param(page.offset)}""", *where.args)
    total = rows[0]["total"] if rows else 0
    if not rows and page.offset > 0:  # past the end: count what there is
        _, total = await firmware_rows(conn, flt, Page(limit=1, offset=0))
    return as_structs(rows, FirmwareRow), total  # (the total column is left out)


async def firmware_labels(conn: asyncpg.Connection, ids: set[str]) -> dict[str, str]:
    rows = await conn.fetch(f"SELECT {_LABEL_COLUMNS} FROM checkouts c WHERE c.id = ANY($1)",
                            sorted(ids))
    return {r.id: firmware_label(r) for r in as_structs(rows, FirmwareLabel)}


async def channels(conn: asyncpg.Connection) -> list[str]:
    return [r["channel"] for r in await conn.fetch(
        "SELECT channel FROM checkouts GROUP BY channel ORDER BY max(created_at) DESC")]


async def previous_firmware(conn: asyncpg.Connection, fw: FirmwareRow) -> str | None:
    """The firmware of the same channel and source before this one."""
    return await conn.fetchval(
        """SELECT id FROM checkouts WHERE channel = $1 AND source_kind = $2
              AND (created_at, id) < ($3, $4) ORDER BY created_at DESC, id DESC LIMIT 1""",
        fw.channel, fw.source_kind, fw.created_at, fw.id)


# -- jobs ---------------------------------------------------------------------------------


class JobRow(msgspec.Struct, kw_only=True):
    id: str
    firmware_id: str
    device_type: str
    image_name: str
    state: str
    result: str | None
    error_code: str | None
    attempt: int
    lab: str | None
    device: str | None
    waiting_for_lab: bool
    regressions: int
    created_at: dt.datetime
    finished_at: dt.datetime | None

    @property
    def verdict(self) -> str:
        if self.state != "done":
            return "waiting" if self.waiting_for_lab else self.state
        if self.result == "fail":
            return "regression" if self.regressions else "fail"
        if self.result == "error":
            return "cancelled" if self.error_code == "cancelled" else "error"
        return self.result or "none"


_JOB_ROW_COLUMNS = columns_of(
    JobRow, "j", **JOB_EXPRS,
    regressions="""(SELECT count(*) FROM regressions r
                     WHERE r.first_failing_checkout_id = j.checkout_id
                       AND r.device_type = j.device_type)""")


async def job_rows(conn: asyncpg.Connection, condition: str, *args: object,
                   limit: int = 200) -> list[JobRow]:
    """Jobs matching ``condition`` (SQL over ``j``; trusted text, values in ``args``)."""
    rows = await conn.fetch(
        f"""SELECT {_JOB_ROW_COLUMNS} {JOB_SOURCE}
             WHERE {condition}
             ORDER BY j.created_at DESC, j.id LIMIT {int(limit)}""", *args)
    return as_structs(rows, JobRow)


async def no_job_reasons(conn: asyncpg.Connection, firmware_id: str) -> list[str]:
    """Why a firmware has no jobs, in words."""
    row = await conn.fetchrow("SELECT state, holdoff_until FROM checkouts WHERE id = $1",
                              firmware_id)
    builds = await conn.fetch(
        """SELECT b.image_name, b.target || '/' || b.subtarget || '/' || coalesce(b.profile, '*')
                  AS device_type,
                  EXISTS (SELECT 1 FROM announced_devices d
                           WHERE d.device_type = b.target || '/' || b.subtarget || '/'
                                 || coalesce(b.profile, split_part(d.device_type, '/', 3)))
                  AS known
             FROM builds b WHERE b.checkout_id = $1 ORDER BY b.image_name""", firmware_id)
    reasons = []
    if row is not None and row["holdoff_until"] is not None and row["state"] != "done":
        reasons.append(f"jobs are held off until {row['holdoff_until']:%Y-%m-%d %H:%M UTC}")
    if not builds:
        reasons.append("the firmware has no images to test")
    for build in builds:
        if not build["known"]:
            reasons.append(f"no lab has device type {build['device_type']} "
                           f"(image {build['image_name']})")
    if builds and not reasons:
        reasons.append("labs with these device types are known; the scheduler has not "
                       f"created jobs yet (firmware state {row['state'] if row else '?'})")
    return reasons
