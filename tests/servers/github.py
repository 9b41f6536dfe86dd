"""A local GitHub REST API: the parts the trigger uses, in GitHub's shapes.

Pull requests (the list with labels, head sha, pagination by ``Link`` header;
one pull request by number, also when closed or merged), Actions
workflow runs filtered by ``head_sha`` / ``status``, run artifacts, and the
artifact download, which — as on GitHub — redirects to another host (here
``localhost`` instead of ``127.0.0.1``) serving the zip. Every answer carries
the ``X-RateLimit-*`` headers; ``exhaust_rate_limit`` makes the API answer 403
as GitHub does, ``fail`` injects 5xx answers. Requests are counted per kind.

For the notifier: commit statuses (``POST .../statuses/{sha}``, kept in
``statuses``) and issue comments of a pull request (list with pagination,
create, edit; kept in ``comments``), with GitHub's 404 for an unknown pull
request or comment and 422 for an invalid status state.

For the notifier's health issues: issues (list filtered by ``state`` and
``labels`` with pagination, create, edit state/body/labels; kept in
``issues``) and their comments, as GitHub answers them.
"""

from __future__ import annotations

import io
import time
import zipfile
from collections import Counter

from aiohttp import web
from aiohttp.typedefs import Handler

LOOPBACK = "127.0.0.1"


def make_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return buffer.getvalue()


class GithubServer:
    def __init__(self, repository: str = "openwrt/openwrt", token: str | None = None,
                 per_page_limit: int = 100) -> None:
        self.repository = repository
        self.token = token
        self.per_page_limit = per_page_limit
        self.pulls: dict[int, dict] = {}
        self.runs: list[dict] = []
        self.artifacts: dict[int, dict] = {}
        self.blobs: dict[int, bytes] = {}
        self.requests: Counter[str] = Counter()
        self.blob_auth_headers: list[str | None] = []
        self.rate_remaining = 5000
        self.rate_reset = int(time.time()) + 3600
        self.failures: dict[str, list[int]] = {}
        self.retry_after: str | None = None
        """When set, every API call is answered 429 with this ``Retry-After``."""
        self.statuses: list[dict] = []
        self.comments: dict[int, dict] = {}
        """Comment id -> comment (with ``issue_number``)."""
        self.issues: dict[int, dict] = {}
        """Issue number -> issue."""
        self._ids = 1000
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.port = 0

    # -- state ----------------------------------------------------------------------------

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    def add_pull(self, number: int, head_sha: str, labels: list[str]) -> None:
        owner = self.repository.split("/")[0]
        self.pulls[number] = {
            "number": number, "state": "open", "title": f"PR {number}",
            "html_url": f"https://github.com/{self.repository}/pull/{number}",
            "user": {"login": "contributor"},
            "labels": [{"id": n, "name": name, "color": "ededed"}
                       for n, name in enumerate(labels)],
            "head": {"sha": head_sha, "ref": f"topic-{number}", "label": f"{owner}:topic",
                     "repo": {"full_name": f"contributor/{self.repository.split('/')[1]}",
                              "clone_url": "https://github.com/contributor/openwrt.git"}},
            "base": {"ref": "main", "sha": "0" * 40},
        }

    def set_labels(self, number: int, labels: list[str]) -> None:
        self.pulls[number]["labels"] = [{"id": n, "name": name} for n, name in enumerate(labels)]

    def push(self, number: int, head_sha: str) -> None:
        self.pulls[number]["head"]["sha"] = head_sha

    def close(self, number: int, *, merged: bool = False) -> None:
        """Closed (or merged, which GitHub also shows as ``state: closed``)."""
        self.pulls[number].update({"state": "closed", "closed_at": "2026-11-26T10:00:00Z",
                                   "merged": merged,
                                   "merged_at": "2026-11-26T10:00:00Z" if merged else None})

    def add_run(self, head_sha: str, artifacts: dict[str, bytes], *,
                conclusion: str = "success", created_at: str = "2026-11-25T10:00:00Z",
                workflow: str = "build.yml") -> int:
        run_id = self._next_id()
        self.runs.append({
            "id": run_id, "name": "Build", "head_sha": head_sha, "status": "completed",
            "conclusion": conclusion, "created_at": created_at, "event": "pull_request",
            "path": f".github/workflows/{workflow}",
        })
        for name, content in artifacts.items():
            artifact_id = self._next_id()
            self.blobs[artifact_id] = content
            self.artifacts[artifact_id] = {
                "id": artifact_id, "name": name, "size_in_bytes": len(content),
                "expired": False, "workflow_run": {"id": run_id, "head_sha": head_sha},
                "archive_download_url": f"{self.url}/repos/{self.repository}/actions/"
                                        f"artifacts/{artifact_id}/zip",
            }
        return run_id

    def exhaust_rate_limit(self, reset_in: float = 3600) -> None:
        self.rate_remaining = 0
        self.rate_reset = int(time.time() + reset_in)

    def restore_rate_limit(self) -> None:
        self.rate_remaining = 5000

    def fail(self, kind: str, status: int, times: int = 1) -> None:
        self.failures[kind] = [status] * times

    def comments_on(self, number: int) -> list[dict]:
        return [c for _, c in sorted(self.comments.items()) if c["issue_number"] == number]

    def add_comment(self, number: int, body: str, login: str = "someone") -> int:
        """A comment somebody else wrote."""
        comment_id = self._next_id()
        self.comments[comment_id] = self._comment(comment_id, number, body, login)
        return comment_id

    def _comment(self, comment_id: int, number: int, body: str, login: str) -> dict:
        return {"id": comment_id, "issue_number": number, "body": body,
                "user": {"login": login, "type": "Bot" if login.endswith("[bot]") else "User"},
                "html_url": f"https://github.com/{self.repository}/pull/{number}"
                            f"#issuecomment-{comment_id}",
                "created_at": "2026-11-26T10:00:00Z", "updated_at": "2026-11-26T10:00:00Z"}

    def add_issue(self, title: str, labels: list[str], state: str = "open",
                  login: str = "someone") -> int:
        """An issue somebody (or an earlier run) opened."""
        number = self._next_id()
        self.issues[number] = {
            "number": number, "title": title, "body": "", "state": state,
            "labels": [{"name": name} for name in labels],
            "user": {"login": login, "type": "Bot" if login.endswith("[bot]") else "User"},
            "html_url": f"https://github.com/{self.repository}/issues/{number}"}
        return number

    def issues_titled(self, title: str) -> list[dict]:
        return [i for _, i in sorted(self.issues.items()) if i["title"] == title]

    # -- HTTP -------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": str(self.rate_remaining),
                "X-RateLimit-Reset": str(self.rate_reset), "X-RateLimit-Resource": "core"}

    @web.middleware
    async def _api(self, request: web.Request, handler):
        if request.path.startswith("/blob/"):
            return await handler(request)
        kind = request.match_info.route.name or "unknown"
        self.requests[kind] += 1
        if self.token and request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"message": "Bad credentials"}, status=401)
        if self.rate_remaining <= 0:
            return web.json_response(
                {"message": "API rate limit exceeded for installation.",
                 "documentation_url": "https://docs.github.com/rest/rate-limit"},
                status=403, headers=self._headers())
        if self.retry_after is not None:  # GitHub's secondary rate limit
            return web.json_response({"message": "You have exceeded a secondary rate limit."},
                                     status=429, headers={"Retry-After": self.retry_after})
        if self.failures.get(kind):
            return web.json_response({"message": "Server Error"},
                                     status=self.failures[kind].pop(0))
        response = await handler(request)
        response.headers.update(self._headers())
        return response

    async def _pull(self, request: web.Request) -> web.Response:
        pull = self.pulls.get(int(request.match_info["number"]))
        if pull is None:
            return web.json_response({"message": "Not Found"}, status=404)
        return web.json_response({"merged": False, **pull})

    async def _pulls(self, request: web.Request) -> web.Response:
        per_page = min(int(request.query.get("per_page", 30)), self.per_page_limit)
        page = int(request.query.get("page", 1))
        state = request.query.get("state", "open")
        pulls = [p for _, p in sorted(self.pulls.items()) if state in ("all", p["state"])]
        chunk = pulls[(page - 1) * per_page: page * per_page]
        headers = {}
        if page * per_page < len(pulls):
            headers["Link"] = (f'<{self.url}{request.path}?state={state}&per_page={per_page}'
                               f'&page={page + 1}>; rel="next"')
        return web.json_response(chunk, headers=headers)

    def _filter_runs(self, request: web.Request, workflow: str | None) -> web.Response:
        runs = self.runs
        if workflow:
            runs = [r for r in runs if r["path"].endswith("/" + workflow)]
        if "head_sha" in request.query:
            runs = [r for r in runs if r["head_sha"] == request.query["head_sha"]]
        if request.query.get("status") == "success":
            runs = [r for r in runs if r["conclusion"] == "success"]
        runs = sorted(runs, key=lambda r: r["created_at"], reverse=True)
        return web.json_response({"total_count": len(runs), "workflow_runs": runs})

    async def _runs(self, request: web.Request) -> web.Response:
        return self._filter_runs(request, None)

    async def _workflow_runs(self, request: web.Request) -> web.Response:
        return self._filter_runs(request, request.match_info["workflow"])

    async def _run_artifacts(self, request: web.Request) -> web.Response:
        run_id = int(request.match_info["run_id"])
        found = [a for a in self.artifacts.values() if a["workflow_run"]["id"] == run_id]
        return web.json_response({"total_count": len(found), "artifacts": found})

    async def _artifact_zip(self, request: web.Request) -> web.Response:
        artifact_id = int(request.match_info["artifact_id"])
        if artifact_id not in self.blobs:
            return web.json_response({"message": "Not Found"}, status=404)
        # GitHub answers with a redirect to a signed blob-storage URL on another host.
        raise web.HTTPFound(f"http://localhost:{self.port}/blob/{artifact_id}?sig=signed")

    async def _blob(self, request: web.Request) -> web.Response:
        self.requests["blob"] += 1
        self.blob_auth_headers.append(request.headers.get("Authorization"))
        return web.Response(body=self.blobs[int(request.match_info["artifact_id"])],
                            content_type="application/zip")

    async def _create_status(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body.get("state") not in ("error", "failure", "pending", "success"):
            return web.json_response({"message": "Validation Failed"}, status=422)
        status = {"id": self._next_id(), "sha": request.match_info["sha"],
                  "state": body["state"], "context": body.get("context", "default"),
                  "target_url": body.get("target_url"), "description": body.get("description")}
        self.statuses.append(status)
        return web.json_response(status, status=201)

    async def _list_issues(self, request: web.Request) -> web.Response:
        per_page = min(int(request.query.get("per_page", 30)), self.per_page_limit)
        page = int(request.query.get("page", 1))
        state = request.query.get("state", "open")
        wanted = {n for n in request.query.get("labels", "").split(",") if n}
        found = [i for _, i in sorted(self.issues.items(), reverse=True)  # newest first
                 if state in ("all", i["state"])
                 and wanted <= {label["name"] for label in i["labels"]}]
        headers = {}
        if page * per_page < len(found):
            query = f"state={state}&labels={','.join(sorted(wanted))}&per_page={per_page}"
            headers["Link"] = f'<{self.url}{request.path}?{query}&page={page + 1}>; rel="next"'
        return web.json_response(found[(page - 1) * per_page: page * per_page], headers=headers)

    async def _create_issue(self, request: web.Request) -> web.Response:
        body = await request.json()
        if not body.get("title"):
            return web.json_response({"message": "Validation Failed"}, status=422)
        number = self.add_issue(body["title"], body.get("labels", []), login="wrtci[bot]")
        self.issues[number]["body"] = body.get("body", "")
        return web.json_response(self.issues[number], status=201)

    async def _edit_issue(self, request: web.Request) -> web.Response:
        issue = self.issues.get(int(request.match_info["number"]))
        if issue is None:
            return web.json_response({"message": "Not Found"}, status=404)
        body = await request.json()
        if body.get("state", "open") not in ("open", "closed"):
            return web.json_response({"message": "Validation Failed"}, status=422)
        for key in ("state", "body", "title", "state_reason"):
            if key in body:
                issue[key] = body[key]
        if "labels" in body:
            issue["labels"] = [{"name": name} for name in body["labels"]]
        return web.json_response(issue)

    def _commentable(self, number: int) -> bool:
        return number in self.pulls or number in self.issues

    async def _list_comments(self, request: web.Request) -> web.Response:
        number = int(request.match_info["number"])
        if not self._commentable(number):
            return web.json_response({"message": "Not Found"}, status=404)
        per_page = min(int(request.query.get("per_page", 30)), self.per_page_limit)
        page = int(request.query.get("page", 1))
        comments = self.comments_on(number)
        headers = {}
        if page * per_page < len(comments):
            headers["Link"] = (f'<{self.url}{request.path}?per_page={per_page}'
                               f'&page={page + 1}>; rel="next"')
        return web.json_response(comments[(page - 1) * per_page: page * per_page],
                                 headers=headers)

    async def _create_comment(self, request: web.Request) -> web.Response:
        number = int(request.match_info["number"])
        if not self._commentable(number):
            return web.json_response({"message": "Not Found"}, status=404)
        body = await request.json()
        comment_id = self._next_id()
        self.comments[comment_id] = self._comment(comment_id, number, body["body"],
                                                  "wrtci[bot]")
        return web.json_response(self.comments[comment_id], status=201)

    async def _edit_comment(self, request: web.Request) -> web.Response:
        comment = self.comments.get(int(request.match_info["comment_id"]))
        if comment is None:
            return web.json_response({"message": "Not Found"}, status=404)
        comment.update(body=(await request.json())["body"], updated_at="2026-11-26T11:00:00Z")
        return web.json_response(comment)

    def _routes(self) -> list[tuple[str, str, Handler, str]]:
        """(method, path, handler, name): the name is what ``requests`` and ``fail`` count."""
        repo = "/repos/{owner}/{repo}"
        issue = f"{repo}/issues/{{number:\\d+}}"
        return [
            ("GET", f"{repo}/pulls", self._pulls, "pulls"),
            ("GET", f"{repo}/pulls/{{number:\\d+}}", self._pull, "pull"),
            ("GET", f"{repo}/actions/runs", self._runs, "runs"),
            ("GET", f"{repo}/actions/workflows/{{workflow}}/runs", self._workflow_runs,
             "workflow_runs"),
            ("GET", f"{repo}/actions/runs/{{run_id}}/artifacts", self._run_artifacts,
             "artifacts"),
            ("GET", f"{repo}/actions/artifacts/{{artifact_id}}/zip", self._artifact_zip, "zip"),
            ("POST", f"{repo}/statuses/{{sha}}", self._create_status, "status"),
            ("GET", f"{repo}/issues", self._list_issues, "issues"),
            ("POST", f"{repo}/issues", self._create_issue, "create_issue"),
            ("PATCH", issue, self._edit_issue, "edit_issue"),
            ("GET", f"{issue}/comments", self._list_comments, "comments"),
            ("POST", f"{issue}/comments", self._create_comment, "create_comment"),
            ("PATCH", f"{repo}/issues/comments/{{comment_id:\\d+}}", self._edit_comment,
             "edit_comment"),
            ("GET", "/blob/{artifact_id}", self._blob, "blob"),
        ]

    async def start(self) -> GithubServer:
        app = web.Application(middlewares=[self._api])
        for method, path, handler, name in self._routes():
            app.router.add_route(method, path, handler, name=name)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, LOOPBACK, 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{LOOPBACK}:{self.port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
