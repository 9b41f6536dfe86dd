"""One delivery (a channel of one firmware round): claim, send, record.

- sent: recorded with what the other side answered;
- a :class:`PermanentFailure` (HTTP 4xx, SMTP 5xx): recorded failed at once;
- a :class:`TemporaryFailure` (server down, 5xx, rate limit): put off with
  the configured backoff and tried again on the event's redelivery, until
  ``max_attempts`` tries; then recorded failed.

Every failure recorded for good is logged as an error: nobody else will see it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable

import asyncpg
import msgspec

from wrtci.services.notifier import store
from wrtci.services.notifier.config import NotifierSection
from wrtci.services.notifier.store import Busy, Claimed, Delivery, Finished

log = logging.getLogger(__name__)


class TemporaryFailure(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s
        """When the other side said how long to wait (rate limit)."""


class PermanentFailure(Exception):
    pass


class DeliveryState(enum.StrEnum):
    SENT = "sent"
    FAILED = "failed"
    ALREADY = "already"
    """Sent or failed before."""
    LATER = "later"
    """Try again after ``wait_s``."""


class Outcome(msgspec.Struct, frozen=True):
    state: DeliveryState
    wait_s: float = 0.0


Send = Callable[[], Awaitable[str | None]]
"""Sends, returns a detail to keep (a Message-ID, a comment id)."""


async def deliver(pool: asyncpg.Pool, section: NotifierSection, delivery: Delivery,
                  target: str, send: Send) -> Outcome:
    ids = {"firmware_id": delivery.firmware_id, "round": delivery.round,
           "channel": delivery.channel.value, "target": target}
    claim = await store.claim(pool, delivery, target, section.lease_s)
    if isinstance(claim, Finished):
        log.info("report already %s", claim.state, extra=ids)
        return Outcome(DeliveryState.ALREADY)
    if isinstance(claim, Busy):
        # Held by another replica: it usually finishes long before its lease ends,
        # so look again soon; the lease only bounds how long a crashed one blocks.
        wait = min(claim.wait_s, section.settle_poll_s) if claim.held else claim.wait_s
        log.info("report being sent elsewhere" if claim.held else "report not due yet",
                 extra=ids | {"wait_s": round(wait, 3)})
        return Outcome(DeliveryState.LATER, wait)
    if not isinstance(claim, Claimed):
        raise TypeError(f"unexpected claim {claim!r}")
    ids["attempt"] = claim.attempts
    try:
        detail = await send()
    except PermanentFailure as exc:
        await store.mark_failed(pool, delivery, str(exc))
        log.error("report failed for good", extra=ids | {"error": str(exc)})
        return Outcome(DeliveryState.FAILED)
    except TemporaryFailure as exc:
        if claim.attempts >= section.max_attempts:
            await store.mark_failed(pool, delivery, f"gave up after {claim.attempts} tries: "
                                                    f"{exc}")
            log.error("report failed, no tries left", extra=ids | {"error": str(exc)})
            return Outcome(DeliveryState.FAILED)
        delay = section.retry_delay(claim.attempts)
        if exc.retry_after_s is not None:
            delay = max(delay, exc.retry_after_s)
        await store.put_off(pool, delivery, str(exc), delay)
        log.warning("report not delivered, tried again later",
                    extra=ids | {"error": str(exc), "delay_s": delay})
        return Outcome(DeliveryState.LATER, delay)
    await store.mark_sent(pool, delivery, detail)
    log.info("report sent", extra=ids | {"detail": detail})
    return Outcome(DeliveryState.SENT)
