"""Waiting and retrying, one way for every daemon and the lab.

- :func:`wait_or_stop` / :func:`sleep_or_stop`: the only "race this against
  ``stop``" in the code base.
- :class:`Backoff`: the delays between tries, configurable (TOML lists), used
  by in-process retries here and by the database timers that retry jobs
  (``[scheduler] infra_retry``) and KCIDB submissions.
- :func:`retrying` / :func:`retry_call`: tenacity, with sleeps that end at
  ``stop`` and one log line when a dependency goes away and one when it is
  back (an outage is not a traceback per try).
- :func:`supervise`: a daemon's long-running loop restarted with backoff when
  it raises (the way systemd restarts a unit), so no loop dies of an outage.
- :data:`CALL_TIMEOUT_S` / :data:`FAILOVER_BACKOFF`: one call to a clustered
  dependency (a JetStream API request while its stream or consumer elects a new
  leader) is bounded in time and retried quickly, so a service is back within
  seconds of the failover instead of waiting out a long timeout or a backoff
  that grew during the election.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import msgspec
import tenacity

log = logging.getLogger(__name__)

T = TypeVar("T")


async def wait_or_stop(aw: Awaitable[Any], stop: asyncio.Event,
                       within_s: float | None = None) -> bool:
    """Wait for ``aw`` until it is done, ``stop`` is set or ``within_s`` passes.

    Returns True if ``aw`` finished. A coroutine passed in is cancelled if it
    did not finish (and its error, if it raised, is raised here); a task or
    future passed in belongs to the caller and is left running.
    """
    owned = not isinstance(aw, asyncio.Future)
    task = asyncio.ensure_future(aw)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopper}, timeout=within_s,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if owned and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if owned and task.done() and not task.cancelled():
        task.result()
    return task.done() and not task.cancelled()


async def sleep_or_stop(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop``; returns True if ``stop`` is set."""
    if not stop.is_set() and seconds > 0:
        await wait_or_stop(stop.wait(), stop, within_s=seconds)
    return stop.is_set()


Delays = Annotated[tuple[Annotated[float, msgspec.Meta(ge=0)], ...], msgspec.Meta(min_length=1)]


class Backoff(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """Delays before the 1st, 2nd, ... retry; the last one repeats."""

    steps_s: Delays = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
    jitter: Annotated[float, msgspec.Meta(ge=0, le=1)] = 0.1
    """Each delay is spread by up to this fraction, so replicas do not retry in step."""

    @classmethod
    def exponential(cls, initial_s: float, max_s: float, factor: float = 2.0) -> Backoff:
        """initial, initial x factor, ... up to ``max_s``."""
        steps = [initial_s]
        while steps[-1] * factor < max_s and initial_s > 0:
            steps.append(steps[-1] * factor)
        return cls(steps_s=(*steps, max_s))

    def delay(self, retry: int) -> float:
        """Seconds before retry number ``retry`` (1: the first retry)."""
        base = self.steps_s[min(max(retry, 1), len(self.steps_s)) - 1]
        return base * (1 + random.uniform(-self.jitter, self.jitter))


DEFAULT_BACKOFF = Backoff()

CALL_TIMEOUT_S = 5.0
"""Bound of one request to a dependency inside a loop (``retry_call(timeout_s=...)``)."""
FAILOVER_BACKOFF = Backoff(steps_s=(0.2, 0.5, 1.0, 2.0, 3.0, 5.0))
"""Retries through a cluster's leader election: short, and capped at a few seconds."""


class Outage:
    """One dependency's failures: logged when they start and when they end, not per try."""

    def __init__(self, what: str, logger: logging.Logger = log) -> None:
        self.what = what
        self.log = logger
        self.failures = 0
        self.since: float | None = None

    def failed(self, exc: BaseException | None, delay: float) -> None:
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            self.log.warning("%s unavailable, retrying with backoff: %r", self.what, exc,
                             extra={"dependency": self.what, "delay_s": round(delay, 2)},
                             exc_info=exc if not is_outage(exc) else None)
        else:
            self.log.debug("%s still unavailable: %r", self.what, exc,
                           extra={"failures": self.failures, "delay_s": round(delay, 2)})

    def recovered(self) -> None:
        if self.since is not None:
            self.log.warning("%s back after %.1f s (%d failed tries)", self.what,
                             time.monotonic() - self.since, self.failures,
                             extra={"dependency": self.what})
        self.failures = 0
        self.since = None


def is_outage(exc: BaseException | None) -> bool:
    """An error a dependency outage brings (no traceback needed), not a bug."""
    return isinstance(exc, OSError | TimeoutError | ConnectionError) or (
        type(exc).__module__.split(".")[0] in ("asyncpg", "nats", "urllib3", "aiohttp", "minio"))


def is_failover(exc: BaseException | None) -> bool:
    """An error of NATS / JetStream: a node went away or a leader is being elected.

    The client reconnects and the cluster elects on its own within seconds, so
    such a failure is retried with :data:`FAILOVER_BACKOFF`, not a backoff
    that grows to minutes."""
    return exc is not None and type(exc).__module__.split(".")[0] == "nats"


def retrying(what: str, stop: asyncio.Event, *, backoff: Backoff = DEFAULT_BACKOFF,
             on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
             attempts: int | None = None, outage: Outage | None = None,
             logger: logging.Logger = log, failover: bool = False) -> tenacity.AsyncRetrying:
    """Tries of one call: ``async for attempt in retrying(...): with attempt: ...``.

    Gives up (raising the last error) after ``attempts`` tries, or as soon as
    ``stop`` is set; otherwise retries forever with ``backoff`` — or with
    :data:`FAILOVER_BACKOFF` after a NATS error if ``failover``.
    """
    outage = outage or Outage(what, logger)

    async def sleep(seconds: float) -> None:
        await sleep_or_stop(stop, seconds)

    def should_stop(state: tenacity.RetryCallState) -> bool:
        return stop.is_set() or (attempts is not None and state.attempt_number >= attempts)

    def before_sleep(state: tenacity.RetryCallState) -> None:
        delay = state.next_action.sleep if state.next_action else 0.0
        outage.failed(state.outcome.exception() if state.outcome else None, delay)

    def wait(state: tenacity.RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        steps = FAILOVER_BACKOFF if failover and is_failover(error) else backoff
        return steps.delay(outage.failures + 1)

    return tenacity.AsyncRetrying(
        sleep=sleep, stop=should_stop, reraise=True, wait=wait,
        retry=tenacity.retry_if_exception_type(on), before_sleep=before_sleep,
    )


async def retry_call(what: str, fn: Callable[..., Awaitable[T]], *args: Any,
                     stop: asyncio.Event, backoff: Backoff = DEFAULT_BACKOFF,
                     on: type[BaseException] | tuple[type[BaseException], ...] = Exception,
                     attempts: int | None = None, logger: logging.Logger = log,
                     timeout_s: float | None = None, **kwargs: Any) -> T:
    """``await fn(*args, **kwargs)`` with retries; logs the outage and its end once.

    ``timeout_s`` bounds each try: one that takes longer is cancelled and counts
    as failed (:class:`TimeoutError`), then retried.
    """
    outage = Outage(what, logger)
    async for attempt in retrying(what, stop, backoff=backoff, on=on, attempts=attempts,
                                  outage=outage):
        with attempt:
            result = await asyncio.wait_for(fn(*args, **kwargs), timeout_s)
    outage.recovered()
    return result  # type: ignore[possibly-undefined]


class LoopReturned(RuntimeError):
    """A supervised loop returned although ``stop`` is not set."""


async def supervise(name: str, loop: Callable[[asyncio.Event], Awaitable[object]],
                    stop: asyncio.Event, *, backoff: Backoff = DEFAULT_BACKOFF,
                    healthy_after_s: float = 60.0, logger: logging.Logger = log) -> None:
    """Run ``loop(stop)`` until ``stop``; if it raises, run it again after a backoff.

    A run that lasted ``healthy_after_s`` counts as recovered: the next
    failure starts again at the first (short) delay and is logged again. A
    loop that failed of NATS (a node gone, a leader being elected) is started
    again with :data:`FAILOVER_BACKOFF`: within seconds of the new leader.
    """
    outage = Outage(f"loop {name!r}", logger)
    try:
        async for attempt in retrying(name, stop, backoff=backoff, outage=outage,
                                      failover=True):
            with attempt:
                started = time.monotonic()
                try:
                    await loop(stop)
                finally:
                    if time.monotonic() - started >= healthy_after_s:
                        outage.recovered()
                if not stop.is_set():
                    raise LoopReturned(f"loop {name!r} returned before stop")
    except Exception as exc:  # only once stop is set: the loop's last error
        logger.info("loop %r ended with %r while stopping", name, exc)
