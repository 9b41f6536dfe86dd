"""What the dashboard API (``dashboard.py``) reads: firmware as KernelCI checkouts.

OpenWrt firmware maps onto the dashboard's tree/branch/commit like this:

- tree: ``checkouts.tree_name`` (``openwrt``); branch: the git branch when the
  source names one (a PR's head branch), else the channel (``snapshot``,
  ``stable``, ``24.10``), which is what an OpenWrt developer follows.
- commit: KCIDB wants 40 hex digits. A firmware built from a known full
  commit (a PR head) uses it. An official build only names an abbreviated
  hash in its revision (``r28427-6df0e3d02a``): the commit is then those hex
  digits, and a lookup accepts any prefix of a full hash that starts with them,
  the abbreviated hash itself, the revision, the version or the firmware id.
  A firmware with no hash at all (an upload) is found by revision/version/id.

Results are those of each job's latest attempt (a retry supersedes its
predecessors), as on wrtci's own pages; tests are KCIDB tests (``kcidb.export``)
with the boot test apart, as the dashboard's "boots".
"""

from __future__ import annotations

import datetime as dt
import re

import asyncpg
import msgspec

from wrtci.services.db.rows import columns_of, fetch_rows
from wrtci.services.kcidb import export as kcidb
from wrtci.services.kcidb import model as m

_HEX_RE = re.compile(r"^[0-9a-f]{4,40}$")
_REVISION_HASH_RE = re.compile(r"^r\d+-([0-9a-f]{4,40})$")


class Tree(msgspec.Struct, kw_only=True):
    """A firmware (checkout) as the dashboard names it."""

    id: str
    tree_name: str
    branch: str
    git_repository_url: str | None
    commit: str
    commit_name: str
    version: str
    channel: str
    start_time: dt.datetime


class _CheckoutRow(msgspec.Struct, kw_only=True):
    id: str
    tree_name: str | None
    git_repository_url: str | None
    git_repository_branch: str | None
    git_commit_hash: str | None
    channel: str
    version: str
    revision: str | None
    start_time: dt.datetime | None
    created_at: dt.datetime


def commit_of(row: _CheckoutRow) -> str:
    """The best commit the format allows (see the module docstring)."""
    if row.git_commit_hash and _HEX_RE.match(row.git_commit_hash):
        return row.git_commit_hash
    match = _REVISION_HASH_RE.match(row.revision or "")
    if match:
        return match[1]
    return row.revision or row.version


def _tree(row: _CheckoutRow) -> Tree:
    return Tree(id=row.id, tree_name=row.tree_name or "openwrt",
                branch=row.git_repository_branch or row.channel,
                git_repository_url=row.git_repository_url, commit=commit_of(row),
                commit_name=row.revision or row.version, version=row.version,
                channel=row.channel, start_time=row.start_time or row.created_at)


async def trees(conn: asyncpg.Connection, since: dt.datetime | None = None,
                ids: list[str] | None = None) -> list[Tree]:
    """Firmware newest first (created since ``since``, or the given ids)."""
    rows = await fetch_rows(
        conn, _CheckoutRow, f"""SELECT {columns_of(_CheckoutRow)} FROM checkouts
             WHERE ($1::timestamptz IS NULL OR created_at >= $1)
               AND ($2::text[] IS NULL OR id = ANY($2::text[]))
             ORDER BY coalesce(start_time, created_at) DESC, id DESC""", since, ids)
    return [_tree(row) for row in rows]


def latest_per_branch(items: list[Tree]) -> list[Tree]:
    seen: dict[tuple[str, str | None, str], Tree] = {}
    for tree in items:  # newest first
        seen.setdefault((tree.tree_name, tree.git_repository_url, tree.branch), tree)
    return list(seen.values())


def matches_commit(tree: Tree, commit: str, stored_id: str) -> bool:
    if commit in (tree.commit, tree.commit_name, tree.version, tree.id) or stored_id == tree.id:
        return True
    if _HEX_RE.match(commit) and _HEX_RE.match(tree.commit):
        return commit.startswith(tree.commit) or tree.commit.startswith(commit)
    return False


async def find_tree(conn: asyncpg.Connection, commit: str, stored_id: str,
                    git_url: str | None, branch: str | None) -> Tree | None:
    """The newest firmware of (url, branch) whose commit matches (url and branch optional)."""
    for tree in await trees(conn):
        if git_url and tree.git_repository_url and git_url != tree.git_repository_url:
            continue
        if branch and branch != tree.branch:
            continue
        if matches_commit(tree, commit, stored_id):
            return tree
    return None


async def branch_history(conn: asyncpg.Connection, tree: Tree, limit: int = 20) -> list[Tree]:
    """Firmware of the same tree and branch up to ``tree``, newest first."""
    return [t for t in await trees(conn)
            if (t.tree_name, t.git_repository_url, t.branch)
            == (tree.tree_name, tree.git_repository_url, tree.branch)
            and t.start_time <= tree.start_time][:limit]


# -- results ------------------------------------------------------------------------------


class Results(msgspec.Struct, kw_only=True):
    """KCIDB objects of the latest attempts of some firmware, with what they hang on."""

    document: m.Document
    trees: dict[str, Tree]
    """By exported checkout id."""

    def builds_by_id(self) -> dict[str, m.Build]:
        return {b.id: b for b in self.document.builds}

    def checkout_of_build(self) -> dict[str, str]:
        return {b.id: b.checkout_id for b in self.document.builds}

    @property
    def tests(self) -> list[m.Test]:
        return [t for t in self.document.tests if t.path != kcidb.BOOT_PATH]

    @property
    def boots(self) -> list[m.Test]:
        return [t for t in self.document.tests if t.path == kcidb.BOOT_PATH]


async def results(conn: asyncpg.Connection, exporter: kcidb.Exporter, checkout_ids: list[str],
                  device_type: str | None = None) -> Results:
    jobs = await conn.fetch(
        """SELECT id, attempt, build_id FROM jobs
            WHERE checkout_id = ANY($1::text[])
              AND ($2::text IS NULL OR device_type = $2)""", checkout_ids, device_type)
    tests = await conn.fetch(
        """SELECT t.id FROM tests t JOIN jobs j ON j.id = t.job_id AND j.attempt = t.attempt
            WHERE j.checkout_id = ANY($1::text[])
              AND ($2::text IS NULL OR j.device_type = $2)""", checkout_ids, device_type)
    selection = await kcidb.select(conn, [r["id"] for r in tests],
                                   [r["build_id"] for r in jobs],
                                   [(r["id"], r["attempt"]) for r in jobs])
    if device_type is None:  # a firmware with no job still shows its builds
        builds = await conn.fetch("SELECT id FROM builds WHERE checkout_id = ANY($1::text[])",
                                  checkout_ids)
        selection.builds |= {r["id"] for r in builds}
    selection.checkouts |= set(checkout_ids)
    document = await kcidb.load(conn, selection, exporter)
    found = await trees(conn, ids=checkout_ids)
    return Results(document=document, trees={exporter.id(t.id): t for t in found})


async def device_types(conn: asyncpg.Connection, since: dt.datetime,
                       until: dt.datetime) -> dict[str, list[str]]:
    """Device types with jobs in [since, until), each with the firmware they ran."""
    rows = await conn.fetch(
        """SELECT DISTINCT device_type, checkout_id FROM jobs
            WHERE created_at >= $1 AND created_at < $2 ORDER BY 1, 2""", since, until)
    found: dict[str, list[str]] = {}
    for row in rows:
        found.setdefault(row["device_type"], []).append(row["checkout_id"])
    return found


class IssueRow(msgspec.Struct, kw_only=True):
    id: str
    version: int
    origin: str
    comment: str | None
    report_url: str | None
    report_subject: str | None
    culprit_code: bool | None
    culprit_tool: bool | None
    culprit_harness: bool | None
    first_seen: dt.datetime | None
    incidents: int


_ISSUE_COLUMNS = columns_of(IssueRow, "s", first_seen="min(a.finished_at)",
                            incidents="count(i.id)")


async def issues(conn: asyncpg.Connection, since: dt.datetime | None, until: dt.datetime | None,
                 issue_id: str | None = None) -> list[IssueRow]:
    """Issues with incidents (on attempts that finished in the window), or one issue."""
    return await fetch_rows(
        conn, IssueRow, f"""SELECT {_ISSUE_COLUMNS}
              FROM issues s
             LEFT JOIN incidents i ON i.issue_id = s.id AND i.issue_version = s.version
             LEFT JOIN job_attempts a ON a.job_id = i.misc->>'job_id'
                                     AND a.attempt = (i.misc->>'attempt')::int
            WHERE ($3::text IS NULL OR s.id = $3)
            GROUP BY s.id, s.version
           HAVING $3::text IS NOT NULL
               OR (count(i.id) > 0 AND ($1::timestamptz IS NULL OR max(a.finished_at) >= $1)
                   AND ($2::timestamptz IS NULL OR min(a.finished_at) < $2))
            ORDER BY s.id, s.version""", since, until, issue_id)
