"""``GET /api/v1/health-logs/<lab>/<device>/<check id>/<file>``: a health check's log.

The lab streams a failing check's console log (and its pytest output) like a
job's; the log writer stores it at ``proto.storage.health_log_key``; this
serves it, with the same headers as a job's log (never the stored type, no
sniffing, sandboxed), at the stable path the check's ``device.health`` event
carries as ``log_url`` and the health issue links.
"""

from __future__ import annotations

from aiohttp import web

from wrtci.proto.storage import HEALTH_LOG_PATH, health_log_of_path
from wrtci.services.api.app import ApiError, context, known_params


async def get_health_log(request: web.Request) -> web.StreamResponse:
    known_params(request)
    tail = request.match_info["tail"]
    found = health_log_of_path(tail)
    if found is None:
        raise ApiError(404, "not a health check log path "
                            "(<lab>/<device>/<check id>/<file>, as the lab's log_url gives it)")
    lab, device, key = found
    response = await context(request).logs.stream(request, key, key.rsplit("/", 1)[1])
    if response is None:
        raise ApiError(404, f"no such log of a health check of {lab}/{device}")
    return response


def add_routes(app: web.Application) -> None:
    app.router.add_get(HEALTH_LOG_PATH + "{tail:.+}", get_health_log)
