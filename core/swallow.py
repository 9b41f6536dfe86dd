"""Errors a daemon (a service, the lab) carries on after: each one logged, and not once a second.

``with logged("what failed", log): await one_call()`` replaces
``contextlib.suppress(Exception)``: the block holds one call, so the line
says which call failed. A place that keeps failing (NATS away, a heartbeat
every few seconds) logs its first failure, then at most once per
``every_s`` with the number of failures in between.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator

EVERY_S = 60.0

KEYS_KEPT = 1000

_last: dict[tuple, tuple[float, int]] = {}
"""(logger, what, extra) -> (when last logged, failures not logged since)."""


def note(what: str, exc: BaseException, logger: logging.Logger, *,
         level: int = logging.WARNING, every_s: float = EVERY_S, trace: bool = False,
         **extra: object) -> bool:
    """Log ``what: exc`` unless this place logged within ``every_s``; True if logged.

    ``trace``: with the traceback (an error that is a bug, not an outage)."""
    # Per place and per thing (device, job): one device's failures never hide another's.
    key = (logger.name, what, tuple(sorted((k, str(v)) for k, v in extra.items())))
    if len(_last) > KEYS_KEPT:
        _last.clear()
    now = time.monotonic()
    last, quiet = _last.get(key, (None, 0))
    if last is not None and now - last < every_s:
        _last[key] = (last, quiet + 1)
        return False
    _last[key] = (now, 0)
    if quiet:
        extra["not_logged_since"] = quiet
    logger.log(level, "%s: %r", what, exc, extra=extra, exc_info=exc if trace else None)
    return True


@contextlib.contextmanager
def logged(what: str, logger: logging.Logger, *, level: int = logging.WARNING,
           every_s: float = EVERY_S, **extra: object) -> Iterator[None]:
    """Run the block; an ``Exception`` it raises is logged (rate-limited), not raised."""
    try:
        yield
    except Exception as exc:  # the caller goes on: that is the point; it is logged
        note(what, exc, logger, level=level, every_s=every_s, **extra)
