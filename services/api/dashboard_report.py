"""``/dashboard/api/tree-report``: a branch's newest firmware with its test history.

What ``kci-dev results tree-report`` prints and ``kci-dev results compare`` /
``gate`` read to tell a regression from an unstable test. The shape is the
dashboard backend's ``TreeReportResponse``:

- the newest firmware of (``git_url``, ``git_branch``) that started between
  ``max_age_in_hours`` and ``min_age_in_hours`` ago, with its build, boot and
  test status counts and its build incidents (``issues.builds``);
- each result of that firmware with the ``group_size`` latest results of the
  same identity on the branch within ``max_age_in_hours`` (newest first),
  grouped as kci-dev reads them: platform (device type) → config (the
  image's target/subtarget/profile) → ``architecture/compiler`` → test path;
- a history whose newest results FAIL after PASSes only is a possible
  regression, PASS after FAILs only a fixed one; any other mix is unstable; a
  history of one status is not listed. (The dashboard's rules.)

``path`` (repeatable) filters test paths with SQL wildcards (``%``, ``_``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from aiohttp import web

from wrtci.services.api import dashboard_data as data
from wrtci.services.api.app import ApiError, context, int_param, json_response
from wrtci.services.api.dashboard import _origin, counts
from wrtci.services.kcidb import model as m
from wrtci.services.weblinks import firmware_href

PARAMS = frozenset({"origin", "git_url", "git_branch", "path", "group_size",
                    "max_age_in_hours", "min_age_in_hours"})
MAX_AGE_LIMIT = 720
"""Hours, as the dashboard (30 days)."""

Key = tuple[str, str, str, str]
"""(platform, config, "architecture/compiler", path)"""


def _patterns(values: list[str]) -> re.Pattern[str]:
    """SQL LIKE patterns (``%`` any text, ``_`` one character) as one regex."""
    def one(pattern: str) -> str:
        return "".join(".*" if c == "%" else "." if c == "_" else re.escape(c)
                       for c in pattern)
    return re.compile("|".join(f"(?:{one(p)})" for p in values or ["%"]), re.DOTALL)


def classify(statuses: list[str | None]) -> str | None:
    """possible_regressions / fixed_regressions / unstable_tests for a history
    (newest first), or None when it holds one status only."""
    if len(set(statuses)) < 2:
        return None
    newest = statuses[0]
    older = statuses[statuses.index(next(s for s in statuses if s != newest)):]
    if newest == "FAIL" and set(older) == {"PASS"}:
        return "possible_regressions"
    if newest == "PASS" and set(older) == {"FAIL"}:
        return "fixed_regressions"
    return "unstable_tests"


def _key(test: m.Test, build: m.Build | None) -> Key:
    env = test.environment.misc if test.environment else None
    arch = (build.architecture or "") if build else ""
    compiler = (build.compiler or "") if build else ""
    return (env.platform if env else "", (build.config_name or "") if build else "",
            f"{arch}/{compiler}", test.path or "")


def _test_counts(tests: list[m.Test]) -> dict[str, int]:
    return {f"{status.lower()}_count": n for status, n in counts(t.status for t in tests).items()}


def _build_issues(document: m.Document, head_builds: set[str],
                  older_builds: set[str]) -> list[dict[str, Any]]:
    issues = {(i.id, i.version): i for i in document.issues}
    seen_before = {(i.issue_id, i.issue_version) for i in document.incidents
                   if i.build_id in older_builds}
    listed = []
    for incident in document.incidents:
        if incident.build_id not in head_builds:
            continue
        key = (incident.issue_id, incident.issue_version)
        issue = issues.get(key)
        culprit = issue.culprit if issue and issue.culprit else m.Culprit()
        listed.append({
            "issue_id": incident.issue_id, "version": incident.issue_version,
            "comment": (issue.comment or issue.report_subject) if issue else None,
            "report_url": issue.report_url if issue else None,
            "build_id": incident.build_id, "first_seen": None,
            "culprit_code": culprit.code, "culprit_tool": culprit.tool,
            "culprit_harness": culprit.harness, "is_new_issue": key not in seen_before})
    return listed


async def tree_report(request: web.Request) -> web.Response:
    unknown = sorted(set(request.query) - PARAMS)
    if unknown:
        raise ApiError(400, f"unknown query parameter {unknown[0]!r}")
    exporter = _origin(request, request.query.get("origin"))
    git_url, branch = request.query.get("git_url"), request.query.get("git_branch")
    if not git_url or not branch:
        raise ApiError(400, "git_url and git_branch are required")
    group_size = int_param(request, "group_size", 3, 2, 100)
    max_age = int_param(request, "max_age_in_hours", 24, 1, MAX_AGE_LIMIT)
    min_age = int_param(request, "min_age_in_hours", 0, 0, MAX_AGE_LIMIT)
    if min_age >= max_age:
        raise ApiError(400, "min_age_in_hours must be less than max_age_in_hours")
    paths = _patterns(request.query.getall("path", []))
    now = dt.datetime.now(dt.UTC)
    oldest, newest = now - dt.timedelta(hours=max_age), now - dt.timedelta(hours=min_age)
    async with context(request).db() as conn:
        branch_trees = [t for t in await data.trees(conn)  # newest first
                        if t.branch == branch and t.git_repository_url in (git_url, None)
                        and oldest <= t.start_time <= newest]
        if not branch_trees:
            raise ApiError(404, f"No firmware of {git_url} {branch} started between "
                                f"{max_age} and {min_age} hours ago")
        results = await data.results(conn, exporter, [t.id for t in branch_trees])
    head = branch_trees[0]
    doc = results.document
    head_checkout = exporter.id(head.id)
    builds = results.builds_by_id()
    head_builds = {b.id for b in doc.builds if b.checkout_id == head_checkout}
    started = {exporter.id(t.id): t.start_time for t in branch_trees}

    history: dict[Key, list[tuple[dt.datetime, dt.datetime, m.Test]]] = {}
    for test in doc.tests:
        build = builds.get(test.build_id)
        if build is None or not paths.fullmatch(test.path or ""):
            continue
        when = started.get(build.checkout_id, head.start_time)
        history.setdefault(_key(test, build), []).append(
            (when, test.start_time or when, test))
    report: dict[str, dict[str, Any]] = {
        "possible_regressions": {}, "fixed_regressions": {}, "unstable_tests": {}}
    for (platform, config, arch_compiler, path), runs in sorted(history.items()):
        runs.sort(key=lambda run: (run[0], run[1]), reverse=True)
        runs = runs[:group_size]
        if runs[0][2].build_id not in head_builds:
            continue  # not run on the newest firmware: no news about it
        category = classify([run[2].status for run in runs])
        if category is None:
            continue
        report[category].setdefault(platform, {}).setdefault(config, {}).setdefault(
            arch_compiler, {})[path] = [
                {"id": t.id, "start_time": t.start_time, "status": t.status}
                for _when, _start, t in runs]

    head_tests = [t for t in results.tests if t.build_id in head_builds]
    head_boots = [t for t in results.boots if t.build_id in head_builds]
    return json_response({
        "dashboard_url": f"{exporter.public_url}{firmware_href(head.id)}",
        "git_url": git_url, "git_branch": head.branch, "commit_hash": head.commit,
        "origin": exporter.origin, "checkout_start_time": head.start_time,
        "build_status_summary": counts(b.status for b in doc.builds if b.id in head_builds),
        "boot_status_summary": _test_counts(head_boots),
        "test_status_summary": _test_counts(head_tests),
        **report,
        "issues": {"builds": _build_issues(doc, head_builds, set(builds) - head_builds)}})
