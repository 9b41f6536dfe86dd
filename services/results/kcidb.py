"""The stored record as KCIDB v5 JSON (checkouts, builds, tests, issues, incidents).

The tables already follow KCIDB; this maps a row to a KCIDB object: no nulls
(KCIDB forbids them: a missing field means "unknown"), fields KCIDB
constrains (commit hashes, URLs, test paths) only when they fit, and the
wrtci-only columns under ``misc``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from typing import Any

import asyncpg
import msgspec

KCIDB_MAJOR = 5
KCIDB_MINOR = 3
"""The newest v5 minor this module writes (and kcidb-io's LATEST schema knows)."""
KCIDB_MINORS = range(KCIDB_MINOR + 1)
KINDS = ("checkouts", "builds", "tests", "issues", "incidents")

_COMMIT_RE = re.compile(r"^[0-9a-f]{40}([0-9a-f]{24})?$")
_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_GIT_URL_RE = re.compile(r"^(https|git)://.+")
_URL_RE = re.compile(r"^[a-z][a-z0-9+.-]*://\S+$")
_PATH_PART_RE = re.compile(r"[^a-zA-Z0-9_-]+")
_ARCH_RE = re.compile(r"[^a-z0-9_]+")
EXCERPT_MAX = 16384


def _clean(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if v is not None and v != {}}


def _time(value: dt.datetime | None) -> str | None:
    return value.astimezone(dt.UTC).isoformat() if value else None


def _url(value: str | None) -> str | None:
    return value if value and _URL_RE.match(value) else None


def _excerpt(value: str | None) -> str | None:
    return value[-EXCERPT_MAX:] if value else None


def kcidb_path(path: str) -> str:
    """A pytest id as a KCIDB test path: dot-separated ``[a-zA-Z0-9_-]`` parts."""
    parts = [_PATH_PART_RE.sub("_", part).strip("_") for part in path.split(".")]
    return ".".join(part for part in parts if part)


def checkout(row: dict[str, Any]) -> dict[str, Any]:
    misc = dict(row.get("misc") or {})
    misc.update(_clean({"source_kind": row["source_kind"], "channel": row["channel"],
                        "version": row["version"], "revision": row.get("revision"),
                        "state": row.get("state")}))
    commit = row.get("git_commit_hash")
    if commit and not _COMMIT_RE.match(commit):
        misc["git_commit_hash"] = commit  # abbreviated hashes are not KCIDB hashes
        commit = None
    repo = row.get("git_repository_url")
    patchset_hash = row.get("patchset_hash")
    return _clean({
        "id": row["id"], "origin": row["origin"],
        "tree_name": row.get("tree_name"),
        "git_repository_url": repo if repo and _GIT_URL_RE.match(repo) else None,
        "git_commit_hash": commit,
        "git_commit_name": row.get("git_commit_name") or row.get("revision"),
        "git_repository_branch": row.get("git_repository_branch"),
        "patchset_hash": patchset_hash if patchset_hash is not None and (
            patchset_hash == "" or _SHA256_RE.match(patchset_hash)) else None,
        "comment": row.get("comment") or f"OpenWrt {row['version']} ({row['channel']})",
        "start_time": _time(row.get("start_time") or row.get("created_at")),
        "log_url": _url(row.get("log_url")),
        "log_excerpt": _excerpt(row.get("log_excerpt")),
        "valid": row.get("valid"),
        "misc": misc,
    })


def build(row: dict[str, Any]) -> dict[str, Any]:
    profile = row.get("profile")
    misc = dict(row.get("misc") or {})
    misc.update(_clean({"target": row["target"], "subtarget": row["subtarget"],
                        "profile": profile, "image_name": row["image_name"],
                        "image_type": row["image_type"], "filesystem": row.get("filesystem"),
                        "sha256": row["sha256"], "size": row.get("size")}))
    url = _url(row.get("url"))
    return _clean({
        "id": row["id"], "checkout_id": row["checkout_id"], "origin": row["origin"],
        "comment": row.get("comment") or row["image_name"],
        "start_time": _time(row.get("start_time")),
        "duration": row.get("duration"),
        "architecture": _ARCH_RE.sub("_", row["target"].lower()),
        "command": row.get("command"), "compiler": row.get("compiler"),
        "output_files": [{"name": row["image_name"], "url": url}] if url else None,
        "config_name": f"{row['target']}/{row['subtarget']}/{profile or '*'}",
        "config_url": _url(row.get("config_url")),
        "log_url": _url(row.get("log_url")),
        "log_excerpt": _excerpt(row.get("log_excerpt")),
        # Published firmware images are builds that succeeded.
        "status": row.get("status") or "PASS",
        "misc": misc,
    })


def test(row: dict[str, Any]) -> dict[str, Any]:
    path = kcidb_path(row["path"])
    misc = dict(row.get("misc") or {})
    misc.update(_clean({"job_id": row["job_id"], "attempt": row["attempt"],
                        "device_type": row["device_type"], "lab": row.get("lab"),
                        "device": row.get("device"),
                        "pytest_id": row["path"] if path != row["path"] else None}))
    environment = _clean({
        "comment": f"{row.get('lab') or '?'}/{row.get('device') or '?'} "
                   f"({row['device_type']})",
        "misc": _clean({"lab": row.get("lab"), "device": row.get("device"),
                        "device_type": row["device_type"]}),
    })
    return _clean({
        "id": row["id"], "build_id": row["build_id"], "origin": row["origin"],
        "environment": environment, "path": path, "comment": row.get("comment"),
        "log_url": _url(row.get("log_url")), "log_excerpt": _excerpt(row.get("log_excerpt")),
        "status": row["status"], "start_time": _time(row.get("start_time")),
        "duration": row.get("duration"), "misc": misc,
    })


def issue(row: dict[str, Any]) -> dict[str, Any]:
    culprit = _clean({"code": row.get("culprit_code"), "tool": row.get("culprit_tool"),
                      "harness": row.get("culprit_harness")})
    return _clean({
        "id": row["id"], "version": row["version"], "origin": row["origin"],
        "report_url": _url(row.get("report_url")), "report_subject": row.get("report_subject"),
        "culprit": culprit or None, "comment": row.get("comment"),
        "misc": row.get("misc") or None,
    })


def incident(row: dict[str, Any]) -> dict[str, Any]:
    return _clean({
        "id": row["id"], "origin": row["origin"], "issue_id": row["issue_id"],
        "issue_version": row["issue_version"], "build_id": row.get("build_id"),
        "test_id": row.get("test_id"), "present": row.get("present"),
        "comment": row.get("comment"), "misc": row.get("misc") or None,
    })


MAPPERS = {"checkouts": checkout, "builds": build, "tests": test, "issues": issue,
           "incidents": incident}


class Selection(msgspec.Struct, kw_only=True):
    """Ids of the objects of one KCIDB document."""

    checkouts: set[str] = msgspec.field(default_factory=set)
    builds: set[str] = msgspec.field(default_factory=set)
    tests: set[str] = msgspec.field(default_factory=set)
    issues: set[tuple[str, int]] = msgspec.field(default_factory=set)
    incidents: set[str] = msgspec.field(default_factory=set)

    def __len__(self) -> int:
        return sum(len(getattr(self, kind)) for kind in KINDS)


def document(objects: dict[str, list[dict[str, Any]]], minor: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"version": {"major": KCIDB_MAJOR, "minor": minor}}
    for kind in KINDS:
        if objects.get(kind):
            doc[kind] = objects[kind]
    return doc


async def load(conn: asyncpg.Connection, selection: Selection) -> dict[str, list[dict]]:
    """The selected rows as KCIDB objects, each list sorted by id."""
    queries = {
        "checkouts": ("SELECT * FROM checkouts WHERE id = ANY($1::text[]) ORDER BY id",
                      sorted(selection.checkouts)),
        "builds": ("SELECT * FROM builds WHERE id = ANY($1::text[]) ORDER BY id",
                   sorted(selection.builds)),
        "tests": ("SELECT * FROM tests WHERE id = ANY($1::text[]) ORDER BY id",
                  sorted(selection.tests)),
        "incidents": ("SELECT * FROM incidents WHERE id = ANY($1::text[]) ORDER BY id",
                      sorted(selection.incidents)),
    }
    objects: dict[str, list[dict]] = {}
    for kind, (sql, ids) in queries.items():
        rows = await conn.fetch(sql, ids) if ids else []
        objects[kind] = [MAPPERS[kind](dict(row)) for row in rows]
    issue_keys = sorted(selection.issues)
    rows = await conn.fetch(
        """SELECT i.* FROM issues i
             JOIN unnest($1::text[], $2::int[]) AS k(id, version)
               ON k.id = i.id AND k.version = i.version ORDER BY i.id, i.version""",
        [k[0] for k in issue_keys], [k[1] for k in issue_keys]) if issue_keys else []
    objects["issues"] = [issue(dict(row)) for row in rows]
    return objects


async def select_tests(conn: asyncpg.Connection, test_ids: Iterable[str],
                       build_ids: Iterable[str] = ()) -> Selection:
    """Tests (and builds) with everything they hang on and every incident on them."""
    selection = Selection(tests=set(test_ids), builds=set(build_ids))
    rows = await conn.fetch(
        """SELECT DISTINCT b.id, b.checkout_id FROM builds b
            WHERE b.id = ANY($2::text[])
               OR b.id IN (SELECT build_id FROM tests WHERE id = ANY($1::text[]))""",
        list(selection.tests), list(selection.builds))
    for row in rows:
        selection.builds.add(row["id"])
        selection.checkouts.add(row["checkout_id"])
    rows = await conn.fetch(
        """SELECT id, issue_id, issue_version FROM incidents
            WHERE test_id = ANY($1::text[]) OR build_id = ANY($2::text[])""",
        list(selection.tests), list(selection.builds))
    for row in rows:
        selection.incidents.add(row["id"])
        selection.issues.add((row["issue_id"], row["issue_version"]))
    return selection


async def export_firmware(conn: asyncpg.Connection, firmware_id: str,
                          minor: int) -> dict[str, Any] | None:
    if await conn.fetchval("SELECT 1 FROM checkouts WHERE id = $1", firmware_id) is None:
        return None
    tests = await conn.fetch(
        "SELECT t.id FROM tests t JOIN builds b ON b.id = t.build_id "
        "WHERE b.checkout_id = $1", firmware_id)
    builds = await conn.fetch("SELECT id FROM builds WHERE checkout_id = $1", firmware_id)
    selection = await select_tests(conn, [r["id"] for r in tests], [r["id"] for r in builds])
    selection.checkouts.add(firmware_id)
    return document(await load(conn, selection), minor)


async def export_range(conn: asyncpg.Connection, since: dt.datetime, until: dt.datetime,
                       minor: int) -> dict[str, Any]:
    """Everything about the tests stored in [since, until)."""
    tests = await conn.fetch(
        "SELECT id FROM tests WHERE ingested_at >= $1 AND ingested_at < $2", since, until)
    selection = await select_tests(conn, [r["id"] for r in tests])
    return document(await load(conn, selection), minor)
