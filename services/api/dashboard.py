"""``/dashboard/api/``: the part of the KernelCI dashboard API that kci-dev reads.

So ``kci-dev results trees|summary|builds|boots|tests|hardware|issues|compare``
works against wrtci with, in kci-dev's settings TOML::

    [wrtci]
    dashboard_api = "http://HOST:PORT/dashboard/api/"

and ``--origin`` set to the site's ``[kcidb] origin``. Shapes follow the
dashboard backend's response models (kernelci/dashboard ``typeModels``); how
firmware maps to tree/branch/commit is in ``dashboard_data``. Ids are the KCIDB
ids of ``wrtci kcidb export``. Errors are ``{"error": "..."}`` with a 4xx.

GET  tree?origin=&interval_in_days=                      latest firmware per branch, counts
GET  tree-report?origin=&git_url=&git_branch=&path=&group_size=&max_age_in_hours=&min_age_in_hours=
     (``dashboard_report``: what kci-dev results tree-report / compare read)
GET  tree/{commit}/summary|builds|boots|tests|commits?origin=&git_url=&git_branch=
GET  build/{id} , build/{id}/issues , test/{id} , test/{id}/issues
GET  hardware/?origin=&startTimestampInSeconds=&endTimestampInSeconds=
POST hardware/{name}/summary|boots|builds|tests           (body: origin, timestamps)
GET  issue/?filter_origin=&startTimestampInSeconds=&endTimestampInSeconds= , issue/{id}
POST issue/extras/
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import asyncpg
import msgspec
from aiohttp import web
from aiohttp.typedefs import Handler

from wrtci.services.api import dashboard_data as data
from wrtci.services.api.app import ApiError, context, json_response
from wrtci.services.kcidb import model as m
from wrtci.services.kcidb.export import Exporter

EXPORTER: web.AppKey[Exporter] = web.AppKey("kcidb_exporter", Exporter)
STATUSES = ("PASS", "ERROR", "FAIL", "SKIP", "MISS", "DONE", "NULL")
_TREE_PARAMS = frozenset({"origin", "git_url", "git_branch", "filter_architecture",
                          "filter_tree_name", "filter_start_date", "filter_end_date",
                          "filter_boot.origin"})
MAX_BODY = 64 * 1024


def _params(request: web.Request, allowed: Iterable[str]) -> dict[str, str]:
    unknown = sorted(set(request.query) - set(allowed))
    if unknown:
        raise ApiError(400, f"unknown query parameter {unknown[0]!r}")
    return dict(request.query)


def exporter_for(request: web.Request) -> Exporter:
    """The site's exporter; log URLs on this API's own address when no public URL is set."""
    exporter = request.app[EXPORTER]
    if exporter.public_url is None:
        exporter = msgspec.structs.replace(exporter, public_url=str(request.url.origin()))
    return exporter


def _origin(request: web.Request, given: str | None) -> Exporter:
    exporter = exporter_for(request)
    if given is not None and given != exporter.origin:
        raise ApiError(404, f"no results of origin {given!r} here: this site's origin "
                            f"is {exporter.origin!r}")
    return exporter


def _timestamp(value: str | int | None, name: str, default: dt.datetime) -> dt.datetime:
    if value is None or value == "":
        return default
    try:
        return dt.datetime.fromtimestamp(float(value), dt.UTC)
    except (ValueError, OverflowError, OSError):
        raise ApiError(400, f"{name} must be a Unix time in seconds") from None


def counts(statuses: Iterable[str | None]) -> dict[str, int]:
    found = dict.fromkeys(STATUSES, 0)
    for status in statuses:
        found[status or "NULL"] = found.get(status or "NULL", 0) + 1
    return found


# -- items ---------------------------------------------------------------------------------


def _tree_fields(tree: data.Tree | None) -> dict[str, Any]:
    if tree is None:
        return {}
    return {"tree_name": tree.tree_name, "git_repository_url": tree.git_repository_url,
            "git_repository_branch": tree.branch, "git_commit_hash": tree.commit,
            "git_commit_name": tree.commit_name}


def build_item(build: m.Build, tree: data.Tree | None) -> dict[str, Any]:
    return {"id": build.id, "origin": build.origin, "architecture": build.architecture,
            "config_name": build.config_name, "config_url": build.config_url,
            "compiler": build.compiler, "status": build.status,
            "valid": build.status == "PASS", "duration": build.duration,
            "log_url": build.log_url, "start_time": build.start_time, "misc": build.misc,
            **_tree_fields(tree)}


def test_item(test: m.Test, build: m.Build | None, tree: data.Tree | None) -> dict[str, Any]:
    env = test.environment.misc if test.environment else None
    platform = env.platform if env else None
    return {"id": test.id, "origin": test.origin, "build_id": test.build_id,
            "status": test.status, "duration": test.duration, "path": test.path,
            "start_time": test.start_time, "log_url": test.log_url,
            "environment_compatible": [], "environment_misc": {"platform": platform},
            "config": build.config_name if build else None,
            "config_name": build.config_name if build else None,
            "architecture": build.architecture if build else None,
            "compiler": build.compiler if build else None,
            "lab": env.lab if env else None,
            "misc": {"platform": platform, "runtime": env.lab if env else None},
            **_tree_fields(tree)}


class _View:
    """One ``data.Results`` in the dashboard's shapes."""

    def __init__(self, results: data.Results) -> None:
        self.r = results
        self.builds = results.builds_by_id()
        self.checkout = results.checkout_of_build()

    def tree_of(self, build_id: str) -> data.Tree | None:
        return self.r.trees.get(self.checkout.get(build_id, ""))

    def builds_list(self) -> list[dict[str, Any]]:
        return [build_item(b, self.tree_of(b.id)) for b in self.r.document.builds]

    def tests_list(self, tests: list[m.Test]) -> list[dict[str, Any]]:
        return [test_item(t, self.builds.get(t.build_id), self.tree_of(t.build_id))
                for t in tests]

    def _issues(self, ids: set[str]) -> tuple[list[dict[str, Any]], set[str]]:
        incidents = [i for i in self.r.document.incidents
                     if (i.test_id or i.build_id) in ids]
        per_issue: dict[tuple[str, int], int] = {}
        for incident in incidents:
            key = (incident.issue_id, incident.issue_version)
            per_issue[key] = per_issue.get(key, 0) + 1
        issues = {(i.id, i.version): i for i in self.r.document.issues}
        listed = [{"id": issue_id, "version": version,
                   "comment": issues[(issue_id, version)].comment
                   if (issue_id, version) in issues else None,
                   "report_url": issues[(issue_id, version)].report_url
                   if (issue_id, version) in issues else None,
                   "incidents_info": {"incidentsCount": n}}
                  for (issue_id, version), n in sorted(per_issue.items())]
        return listed, {i.test_id or i.build_id or "" for i in incidents}

    def test_summary(self, tests: list[m.Test]) -> dict[str, Any]:
        issues, explained = self._issues({t.id for t in tests})
        by_arch: dict[tuple[str, str], list[str | None]] = {}
        by_config: dict[str, list[str | None]] = {}
        by_platform: dict[str, list[str | None]] = {}
        for test in tests:
            build = self.builds.get(test.build_id)
            arch = (build.architecture or "") if build else ""
            by_arch.setdefault((arch, (build.compiler or "") if build else ""),
                               []).append(test.status)
            by_config.setdefault((build.config_name or "") if build else "",
                                 []).append(test.status)
            env = test.environment.misc if test.environment else None
            by_platform.setdefault(env.platform if env else "", []).append(test.status)
        failed = [t for t in tests if t.status == "FAIL"]
        platforms = {k: counts(v) for k, v in sorted(by_platform.items())}
        return {
            "status": counts(t.status for t in tests),
            "architectures": [{"arch": a, "compiler": c, "status": counts(s)}
                              for (a, c), s in sorted(by_arch.items())],
            "configs": {k: counts(v) for k, v in sorted(by_config.items())},
            "issues": issues,
            "unknown_issues": sum(1 for t in failed if t.id not in explained),
            "fail_reasons": {}, "failed_platforms": sorted(
                {p for p, c in platforms.items() if c["FAIL"]}),
            "environment_compatible": {}, "environment_misc": platforms,
            "platforms": platforms}

    def build_summary(self) -> dict[str, Any]:
        builds = self.r.document.builds
        issues, explained = self._issues({b.id for b in builds})

        def valid_counts(items: list[m.Build]) -> dict[str, int]:
            return {"valid": sum(b.status == "PASS" for b in items),
                    "invalid": sum(b.status == "FAIL" for b in items),
                    "null": sum(b.status not in ("PASS", "FAIL") for b in items)}
        by_arch: dict[str, list[m.Build]] = {}
        by_config: dict[str, list[m.Build]] = {}
        for build in builds:
            by_arch.setdefault(build.architecture or "", []).append(build)
            by_config.setdefault(build.config_name or "", []).append(build)
        return {
            "status": counts(b.status for b in builds),
            "architectures": {a: valid_counts(bs) | {"compilers": sorted(
                {b.compiler for b in bs if b.compiler})} for a, bs in sorted(by_arch.items())},
            "configs": {c: valid_counts(bs) for c, bs in sorted(by_config.items())},
            "issues": issues,
            "unknown_issues": sum(1 for b in builds if b.status == "FAIL"
                                  and b.id not in explained)}

    def summary(self) -> dict[str, Any]:
        return {"builds": self.build_summary(), "boots": self.test_summary(self.r.boots),
                "tests": self.test_summary(self.r.tests)}

    def filters(self) -> dict[str, Any]:
        builds = self.r.document.builds
        return {"all": {"configs": sorted({b.config_name or "" for b in builds}),
                        "architectures": sorted({b.architecture or "" for b in builds}),
                        "compilers": sorted({b.compiler for b in builds if b.compiler})},
                "builds": {"issues": []}, "boots": {"issues": []}, "tests": {"issues": []}}


def _filter_arch(request: web.Request, results: data.Results) -> data.Results:
    arch = request.query.get("filter_architecture")
    if not arch:
        return results
    doc = results.document
    builds = [b for b in doc.builds if b.architecture == arch]
    ids = {b.id for b in builds}
    document = msgspec.structs.replace(doc, builds=builds,
                                       tests=[t for t in doc.tests if t.build_id in ids])
    return data.Results(document=document, trees=results.trees)


# -- handlers ------------------------------------------------------------------------------


async def tree_list(request: web.Request) -> web.Response:
    params = _params(request, {"origin", "interval_in_days"})
    exporter = _origin(request, params.get("origin"))
    try:
        days = int(params.get("interval_in_days", "7"))
    except ValueError:
        raise ApiError(400, "interval_in_days must be an integer") from None
    if not 1 <= days <= 3650:
        raise ApiError(400, "interval_in_days must be between 1 and 3650")
    since = dt.datetime.now(dt.UTC) - dt.timedelta(days=days)
    items = []
    async with context(request).db() as conn:
        for t in data.latest_per_branch(await data.trees(conn, since)):
            results = await data.results(conn, exporter, [t.id])
            items.append({
                "id": exporter.id(t.id), "origin": exporter.origin, "tree_name": t.tree_name,
                "git_repository_branch": t.branch, "git_repository_url": t.git_repository_url,
                "git_commit_hash": t.commit, "git_commit_name": t.commit_name,
                "git_commit_tags": [t.version], "patchset_hash": "", "start_time": t.start_time,
                "build_status": counts(b.status for b in results.document.builds),
                "boot_status": _lower(counts(x.status for x in results.boots)),
                "test_status": _lower(counts(x.status for x in results.tests))})
    return json_response(items)


async def _requested_tree(request: web.Request,
                          conn: asyncpg.Connection) -> tuple[data.Tree, Exporter]:
    """The tree (and origin) a ``/tree/{commit}/...`` request names, or 404."""
    params = _params(request, _TREE_PARAMS)
    exporter = _origin(request, params.get("origin"))
    commit = request.match_info["commit"]
    tree = await data.find_tree(conn, commit, exporter.stored(commit),
                                params.get("git_url"), params.get("git_branch"))
    if tree is None:
        raise ApiError(404, "No results available for this tree/branch/commit")
    return tree, exporter


async def _tree_results(request: web.Request) -> tuple[data.Tree, _View]:
    async with context(request).db() as conn:
        tree, exporter = await _requested_tree(request, conn)
        results = await data.results(conn, exporter, [tree.id])
    return tree, _View(_filter_arch(request, results))


async def tree_summary(request: web.Request) -> web.Response:
    tree, view = await _tree_results(request)
    platforms = sorted({t.environment.misc.platform for t in view.r.document.tests
                        if t.environment and t.environment.misc})
    return json_response({"common": {"tree_url": tree.git_repository_url,
                                     "hardware": platforms,
                                     "git_commit_tags": [tree.version]},
                          "summary": view.summary(), "filters": view.filters()})


_LISTS: dict[str, Callable[[_View], list[dict[str, Any]]]] = {
    "builds": lambda view: view.builds_list(),
    "boots": lambda view: view.tests_list(view.r.boots),
    "tests": lambda view: view.tests_list(view.r.tests),
}
"""The lists a tree or a hardware page asks for, by the last part of its path."""


def list_handlers(select: Callable[[web.Request], Awaitable[tuple[Any, _View]]]
                  ) -> list[tuple[str, Handler]]:
    """(path tail, handler) for each of ``_LISTS``, of the results ``select`` picks
    (a tree's, a hardware's)."""
    def handler(kind: str) -> Handler:
        async def answer(request: web.Request) -> web.Response:
            _selected, view = await select(request)
            return json_response({kind: _LISTS[kind](view)})
        return answer
    return [(kind, handler(kind)) for kind in _LISTS]


def _lower(status_counts: dict[str, int]) -> dict[str, int]:
    return {k.lower(): v for k, v in status_counts.items()}


async def tree_commits(request: web.Request) -> web.Response:
    async with context(request).db() as conn:
        tree, exporter = await _requested_tree(request, conn)
        history = []
        for item in await data.branch_history(conn, tree):
            view = _View(await data.results(conn, exporter, [item.id]))
            history.append({
                "git_commit_hash": item.commit, "git_commit_name": item.commit_name,
                "git_commit_tags": [item.version], "earliest_start_time": item.start_time,
                "builds": counts(b.status for b in view.r.document.builds),
                "boots": _lower(counts(t.status for t in view.r.boots)),
                "tests": _lower(counts(t.status for t in view.r.tests))})
    return json_response(history)
