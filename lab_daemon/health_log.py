"""A failing health check's logs out of the lab, for the health issue to link.

The lab cannot store objects: it streams the check's console log (and its
pytest output) like a job's, on its own LOGS subject, under the job id
``proto.storage.health_log_id(device, check id)``. The log writer stores them
(only for a device of this lab) and the API serves them at
``health_log_path``, which becomes the check's ``log_url``: a path, which the
notifier completes with wrtci's own web address.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
from pathlib import Path

from wrtci.lab_daemon.context import LabContext
from wrtci.lab_daemon.logstream import FileTailer, LogStream
from wrtci.lab_daemon.runner import PlanFiles
from wrtci.proto.storage import health_log_id, health_log_path

log = logging.getLogger(__name__)

SEND_WITHIN_S = 30.0
"""How long the check waits for its log to reach JetStream before it reports without."""


def new_check_id(now: dt.datetime | None = None) -> str:
    """``<UTC time>-<random>``: sorts by time, unique per device."""
    now = now or dt.datetime.now(dt.UTC)
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(4)}"


async def send_check_log(ctx: LabContext, device: str, run_dir: Path,
                         check_id: str | None = None) -> str | None:
    """Stream the check's console log and pytest output; their ``log_url`` (a path),
    or None if they did not reach JetStream in time (the message still says where
    the lab keeps them)."""
    files = PlanFiles(run_dir=run_dir)
    check_id = check_id or new_check_id()
    try:
        job_id = health_log_id(device, check_id)
    except ValueError as exc:
        log.warning("health check log not sent: %s", exc, extra={"device": device})
        return None
    sender = ctx.new_sender().start()
    try:
        for stream, path in (("console", files.console_log), ("pytest.log", files.pytest_log)):
            out = LogStream(sender, job_id=job_id, attempt=1, run=1, lab=ctx.lab.name,
                            device=device, stream=stream, chunk_chars=ctx.lab.log_chunk_bytes)
            out.write(await asyncio.to_thread(FileTailer(path).rest))
            out.finish()
        sent = await sender.drain(within_s=min(SEND_WITHIN_S, max(1.0, ctx.grace_left())))
    finally:
        await sender.close()
    if not sent:
        log.warning("health check log not sent within %.0f s", SEND_WITHIN_S,
                    extra={"device": device, "check_id": check_id})
        return None
    return health_log_path(ctx.lab.name, device, check_id)
