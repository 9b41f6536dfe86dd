"""``POST /api/v1/{jobs|firmware}/{id}/{retry|cancel}``: operator requests.

``Authorization: Bearer TOKEN`` (an API token of scope ``control``, see
``services.auth``); optional JSON body ``{"reason": "..."}``. The request is
published as the same event the ``wrtci job|firmware retry|cancel`` command
publishes; the scheduler acts on it. 202 with the event id; 400 bad body,
401 missing / unknown / expired / revoked token, 403 token of another scope,
404 unknown id.
"""

from __future__ import annotations

import logging

import msgspec
from aiohttp import web

from wrtci.services.api import queries
from wrtci.services.api.app import ApiError, context, json_response
from wrtci.services.auth import TokenRefused, authorize
from wrtci.services.operator_requests import publish_request

log = logging.getLogger(__name__)

SOURCE = "wrtci/api"
MAX_BODY = 16 * 1024


class RequestBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    reason: str | None = msgspec.field(default=None)


_decoder = msgspec.json.Decoder(RequestBody)


async def read_body(request: web.Request) -> RequestBody:
    if (request.content_length or 0) > MAX_BODY:
        raise ApiError(413, f"body is over {MAX_BODY} bytes")
    raw = await request.content.read(MAX_BODY + 1)
    if len(raw) > MAX_BODY:
        raise ApiError(413, f"body is over {MAX_BODY} bytes")
    if not raw.strip():
        return RequestBody()
    try:
        body = _decoder.decode(raw)
    except msgspec.DecodeError as exc:  # ValidationError is a DecodeError
        raise ApiError(400, f"bad JSON body: {exc}") from None
    if body.reason is not None and len(body.reason) > 1000:
        raise ApiError(400, "reason is over 1000 characters")
    return body


async def requester(request: web.Request, scope: str = "control") -> str:
    """The name of the request's token if it has ``scope``; 401 / 403 with the reason."""
    try:
        return await authorize(context(request).pool, request.headers.get("Authorization", ""),
                               scope, path=request.path)
    except TokenRefused as exc:
        raise ApiError(exc.status, exc.reason) from None


_OPEN_PATHS = ("/healthz", "/static/")


@web.middleware
async def read_token(request: web.Request, handler):
    """With ``[api] require_read_token``: every read needs a token (any scope).
    POSTs check their own scope in their handler."""
    if (context(request).section.require_read_token and request.method in ("GET", "HEAD")
            and not request.path.startswith(_OPEN_PATHS)):
        await requester(request, "read")
    return await handler(request)


def handler(noun: str, verb: str):
    async def handle(request: web.Request) -> web.Response:
        ctx = context(request)
        who = await requester(request)  # first: an unknown caller learns nothing about ids
        object_id = request.match_info["object_id"]
        body = await read_body(request)
        async with ctx.db() as conn:
            if not await queries.exists(conn, noun, object_id):
                raise ApiError(404, f"no {noun} {object_id}")
        event = await publish_request(ctx.publisher, noun, verb, object_id, body.reason, who,
                                      SOURCE)
        log.info("%s %s requested", noun, verb,
                 extra={f"{noun}_id": object_id, "requested_by": who, "event_id": event.id})
        return json_response({"event_id": event.id, "type": event.kind, "id": object_id},
                             status=202)
    return handle


def add_routes(app: web.Application) -> None:
    for noun, collection in (("job", "jobs"), ("firmware", "firmware")):
        for verb in ("retry", "cancel"):
            app.router.add_post(f"/api/v1/{collection}/{{object_id:.+}}/{verb}",
                                handler(noun, verb))
