"""Reports on GitHub: a commit status on the PR head and one summary comment.

``POST /repos/{repo}/statuses/{sha}`` sets the ``wrtci`` status (success,
failure, error) linking to the web page. The comment carries a hidden marker
naming the firmware; every round lists the PR's comments
(``GET /repos/{repo}/issues/{n}/comments``, all pages) and edits the marked
one (``PATCH /repos/{repo}/issues/comments/{id}``), or creates it (``POST``).
Finding the marker also makes a resend after a crash an edit, not a second
comment.

The client is the shared one (``services.github``: headers, token,
timeouts, rate-limit detection); this sorts its failures: rate limits, 5xx and
network trouble are temporary, any other 4xx is permanent.
"""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import msgspec

from wrtci.proto.model import PullRequest
from wrtci.services.github import GithubClient, GithubError, GithubHttpError, RateLimited
from wrtci.services.notifier.config import GithubSection
from wrtci.services.notifier.delivery import PermanentFailure, TemporaryFailure

MAX_COMMENT_PAGES = 30


def client_for(session: aiohttp.ClientSession, section: GithubSection) -> GithubClient:
    return GithubClient(session, api_url=section.api_url, token=section.token,
                        timeout_s=section.timeout_s)


async def call(client: GithubClient, method: str, path: str, *, payload: Any = None,
               params: dict[str, Any] | None = None) -> tuple[bytes, str | None]:
    """``client.request``, its failures sorted: rate limits, 5xx and network
    trouble are temporary, any other 4xx is permanent."""
    try:
        return await client.request(method, path, payload=payload, params=params)
    except RateLimited as exc:
        raise TemporaryFailure(
            str(exc), retry_after_s=max(exc.reset_at - time.time(), 0)) from exc
    except GithubHttpError as exc:
        if exc.status >= 500:
            raise TemporaryFailure(str(exc)) from exc
        raise PermanentFailure(str(exc)) from exc
    except GithubError as exc:
        raise TemporaryFailure(str(exc)) from exc


class Comment(msgspec.Struct, frozen=True):
    id: int
    body: str | None = ""


class GithubReporter:
    def __init__(self, session: aiohttp.ClientSession, section: GithubSection) -> None:
        self.section = section
        self.client = client_for(session, section)

    async def _call(self, method: str, path: str, *, payload: Any = None,
                    params: dict[str, Any] | None = None) -> tuple[bytes, str | None]:
        """The answer's body and the next page's URL; raises a delivery failure."""
        return await call(self.client, method, path, payload=payload, params=params)

    async def set_status(self, pr: PullRequest, state: str, target_url: str,
                         description: str) -> str:
        await self._call("POST", f"/repos/{pr.repository}/statuses/{pr.head_sha}", payload={
            "state": state, "target_url": target_url, "description": description,
            "context": self.section.context})
        return state

    async def find_comment(self, pr: PullRequest, marker: str) -> int | None:
        url: str | None = f"/repos/{pr.repository}/issues/{pr.number}/comments"
        params: dict[str, Any] | None = {"per_page": 100}
        for _ in range(MAX_COMMENT_PAGES):
            if url is None:
                return None
            body, url = await self._call("GET", url, params=params)
            params = None  # the next page's URL carries them
            try:
                comments = msgspec.json.decode(body, type=list[Comment])
            except msgspec.DecodeError as exc:
                raise TemporaryFailure(f"unexpected comment list: {exc}") from exc
            for comment in comments:
                if comment.body and marker in comment.body:
                    return comment.id
        return None

    async def upsert_comment(self, pr: PullRequest, marker: str, body: str) -> str:
        """Edit the comment with ``marker``, or create it: ``edited:<id>`` / ``created:<id>``."""
        existing = await self.find_comment(pr, marker)
        if existing is not None:
            await self._call("PATCH", f"/repos/{pr.repository}/issues/comments/{existing}",
                             payload={"body": body})
            return f"edited:{existing}"
        answer, _ = await self._call("POST", f"/repos/{pr.repository}/issues/{pr.number}/comments",
                                     payload={"body": body})
        try:
            created = msgspec.json.decode(answer, type=Comment)
        except msgspec.DecodeError:
            return "created"
        return f"created:{created.id}"
