"""A local kcidb-ng REST endpoint (the kcidb-restd-rs contract), for tests.

- ``POST /submit`` with ``Authorization: Bearer <JWT>`` (HS256, claims
  ``origin`` + ``gendate``): a JSON body is spooled and answered
  ``{"id": ..., "status": "ok", "message": ...}``; 401 without a valid token,
  400 for a body that is not JSON.
- ``GET /status?id=ID``: ``ready`` until the spool has been "ingested"
  (``processed``), or ``failed`` when the submission does not pass the KCIDB
  v5 checks; ``notfound`` (404) for an unknown id.

Faults to inject, one per coming ``/submit``: ``"500"`` answers 500 without
spooling; ``"timeout"`` holds the request longer than the client waits and
spools nothing (the client has gone: the server gives up, as a server behind
a proxy with a request timeout does).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
from typing import Any

from aiohttp import web

from tests.helpers import kcidb_errors


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def make_token(secret: str, origin: str, gendate: str = "2026-11-25") -> str:
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    claims = _b64(json.dumps({"origin": origin, "gendate": gendate}).encode())
    signature = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256)
    return f"{header}.{claims}.{_b64(signature.digest())}"


def _verify(token: str, secret: str) -> dict[str, Any] | None:
    try:
        header, claims, signature = token.split(".")
        expected = hmac.new(secret.encode(), f"{header}.{claims}".encode(), hashlib.sha256)
        if not hmac.compare_digest(_b64(expected.digest()), signature):
            return None
        return json.loads(base64.urlsafe_b64decode(claims + "=" * (-len(claims) % 4)))
    except (ValueError, json.JSONDecodeError):
        return None


class KcidbServer:
    def __init__(self, secret: str = "kcidb-secret", hold_s: float = 5.0) -> None:
        self.secret = secret
        self.hold_s = hold_s
        self.faults: list[str] = []
        self.spool: dict[str, dict[str, Any]] = {}
        self.status_of: dict[str, str] = {}
        self.requests: list[str] = []
        self._runner: web.AppRunner | None = None
        self.url = ""

    def _answer(self, status: int, state: str, submission_id: str = "0",
                message: str = "") -> web.Response:
        return web.json_response({"id": submission_id, "status": state, "message": message},
                                 status=status)

    def _authorised(self, request: web.Request) -> bool:
        auth = request.headers.get("Authorization", "")
        return auth.startswith("Bearer ") and _verify(auth[7:], self.secret) is not None

    async def submit(self, request: web.Request) -> web.Response:
        self.requests.append("submit")
        if not self._authorised(request):
            return self._answer(401, "error", message="Missing or invalid JWT")
        fault = self.faults.pop(0) if self.faults else None
        if fault == "500":
            await request.read()
            return self._answer(500, "error", message="spool unavailable")
        if fault == "timeout":
            await asyncio.sleep(self.hold_s)
            raise web.HTTPGatewayTimeout()
        try:
            body = json.loads(await request.read())
        except json.JSONDecodeError as exc:
            return self._answer(400, "error", message=str(exc))
        submission_id = secrets.token_hex(16)
        self.spool[submission_id] = body
        self.status_of[submission_id] = "ready"
        return self._answer(200, "ok", submission_id, f"Received submission {submission_id}")

    async def status(self, request: web.Request) -> web.Response:
        self.requests.append("status")
        if not self._authorised(request):
            return self._answer(401, "error", message="Missing or invalid JWT")
        submission_id = request.query.get("id", "")
        if not submission_id.isalnum():
            return self._answer(400, "error", message="Invalid id")
        if submission_id not in self.status_of:
            return self._answer(404, "notfound", submission_id, "File not found")
        state = self.status_of[submission_id]
        if state == "ready":  # the ingester picks it up between two status calls
            valid = not kcidb_errors(self.spool[submission_id])
            self.status_of[submission_id] = "processed" if valid else "failed"
        return self._answer(200, state, submission_id)

    async def start(self) -> KcidbServer:
        app = web.Application()
        app.router.add_post("/submit", self.submit)
        app.router.add_get("/status", self.status)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def objects(self, kind: str) -> list[str]:
        """Ids of every object of ``kind`` the server spooled, duplicates included."""
        return [obj["id"] for body in self.spool.values() for obj in body.get(kind, [])]
