"""The aiohttp application: shared context, error handling, request parsing."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import asyncpg
import msgspec
import nats.errors
from aiohttp import web
from nats.js import JetStreamContext

from wrtci.core.runtime import EventPublisher
from wrtci.proto.subjects import Subjects
from wrtci.services.api.config import ApiSection
from wrtci.services.api.layout import error_page
from wrtci.services.api.logs import LogReader
from wrtci.services.db.rows import Page

log = logging.getLogger(__name__)

ACQUIRE_TIMEOUT_S = 10.0
_json = msgspec.json.Encoder()

# A failure of a dependency is the server's problem, not the client's: 503, retry later.
UNAVAILABLE = (OSError, TimeoutError, asyncpg.PostgresConnectionError,
               asyncpg.InterfaceError, nats.errors.Error)


@dataclass
class ApiContext:
    section: ApiSection
    subjects: Subjects
    pool: asyncpg.Pool
    js: JetStreamContext
    publisher: EventPublisher
    logs: LogReader

    @contextlib.asynccontextmanager
    async def db(self) -> AsyncIterator[asyncpg.Connection]:
        async with self.pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            yield conn


CONTEXT: web.AppKey[ApiContext] = web.AppKey("api_context", ApiContext)


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def context(request: web.Request) -> ApiContext:
    return request.app[CONTEXT]


def json_response(value: Any, status: int = 200) -> web.Response:
    return web.Response(body=_json.encode(value), status=status,
                        content_type="application/json")


def _error_response(request: web.Request, status: int, message: str,
                    headers: dict[str, str] | None = None) -> web.Response:
    if request.path.startswith(("/api/", "/dashboard/api/")):
        return web.Response(body=_json.encode({"error": message}), status=status,
                            content_type="application/json", headers=headers)
    return error_page(status, message, headers)


def _has_nul(request: web.Request) -> bool:
    """PostgreSQL text cannot hold NUL: such an id or filter can match nothing."""
    return "\0" in request.path or any("\0" in value for value in request.query.values())


@web.middleware
async def errors(request: web.Request, handler):
    try:
        if _has_nul(request):
            raise ApiError(400, "NUL characters are not allowed in the path or query")
        return await handler(request)
    except ApiError as exc:
        log.info("request refused", extra={"path": request.path, "status": exc.status,
                                           "error": exc.message})
        return _error_response(request, exc.status, exc.message)
    except web.HTTPNotFound:
        return _error_response(request, 404, "not found")
    except web.HTTPMethodNotAllowed as exc:
        return _error_response(request, 405, f"method {request.method} not allowed",
                               {"Allow": ",".join(sorted(exc.allowed_methods))})
    except UNAVAILABLE as exc:
        log.error("dependency failed", extra={"path": request.path, "error": repr(exc)})
        return _error_response(request, 503, "temporarily unavailable, try again",
                               {"Retry-After": "10"})
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _error_response(request, exc.status, exc.reason)
    except Exception:
        # Still a JSON error or a page with the security headers, never aiohttp's bare 500.
        log.exception("request failed", extra={"path": request.path})
        return _error_response(request, 500, "internal error")


# -- parsing the request -------------------------------------------------------------


def int_param(request: web.Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not low <= value <= high:
        raise ApiError(400, f"{name} must be between {low} and {high}")
    return value


def page_param(request: web.Request) -> Page:
    section = context(request).section
    return Page(limit=int_param(request, "limit", section.page_size, 1, section.max_page_size),
                offset=int_param(request, "offset", 0, 0, 10**9))


def choice_param(request: web.Request, name: str, choices: frozenset[str]) -> str | None:
    value = request.query.get(name) or None
    if value is not None and value not in choices:
        raise ApiError(400, f"{name} must be one of {', '.join(sorted(choices))}")
    return value


def text_param(request: web.Request, name: str, max_length: int = 200) -> str | None:
    value = request.query.get(name) or None
    if value is not None and len(value) > max_length:
        raise ApiError(400, f"{name} is too long")
    return value


def bool_param(request: web.Request, name: str) -> bool:
    value = request.query.get(name, "").lower()
    if value in ("", "0", "false", "no"):
        return False
    if value in ("1", "true", "yes"):
        return True
    raise ApiError(400, f"{name} must be true or false")


def path_int(request: web.Request, name: str) -> int:
    try:
        value = int(request.match_info[name])
    except ValueError:
        raise ApiError(400, f"{name} must be an integer") from None
    if not 1 <= value <= 10**6:
        raise ApiError(400, f"{name} out of range")
    return value


def paginated(request: web.Request, items: list, total: int, page: Page) -> dict[str, Any]:
    """A page of items, with the URL of the next one (None on the last page)."""
    following = page.offset + len(items)
    next_url = None
    if following < total:
        next_url = str(request.rel_url.update_query(offset=following, limit=page.limit))
    return {"items": items, "total": total, "limit": page.limit, "offset": page.offset,
            "next": next_url}


def known_params(request: web.Request, *names: str) -> None:
    """Refuse a query parameter the handler does not read, or one given twice: a typo
    (``?chanel=stable``) must not silently show everything."""
    unknown = sorted(set(request.query) - set(names))
    if unknown:
        takes = ", ".join(names) if names else "no parameters"
        raise ApiError(400, f"unknown query parameter {unknown[0]!r} (this takes {takes})")
    for name in names:
        if len(request.query.getall(name, ())) > 1:
            raise ApiError(400, f"query parameter {name!r} given more than once")
