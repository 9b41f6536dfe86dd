"""The pull loop every service uses on its durable consumer.

- ack after the handler succeeded;
- ``nak(delay)`` when the handler raises :class:`Retry` or fails unexpectedly
  (the consumer's ``max_deliver`` bounds the attempts);
- ``term()`` for a message that can never be handled: it does not decode, or
  the handler raised :class:`Reject` — logged with subject and sequence;
- on stop: no new fetch, the message being handled finishes, the rest of the
  batch is handed back at once (``nak``) for another replica;
- JetStream away or electing a leader (a node of the cluster died): every
  request (consumer info / create, fetch) is bounded in time and retried with
  the short :data:`~core.retry.FAILOVER_BACKOFF`, inside the loop, so the loop
  takes messages again within seconds of the new leader — not after the
  daemon's restart backoff, which grows with every failure during an election.
  A consumer that is gone is created again.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgspec
import nats.errors
import nats.js.errors
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import ConsumerConfig

from wrtci.core.retry import (
    CALL_TIMEOUT_S,
    FAILOVER_BACKOFF,
    Outage,
    is_outage,
    retry_call,
    sleep_or_stop,
)
from wrtci.proto.events import CloudEvent, DecodeError, decode
from wrtci.proto.topology import SERVICE_BACKOFF, ensure_consumer

log = logging.getLogger(__name__)


class Disposition(enum.StrEnum):
    """What the pull loop did with a message."""

    ACK = "ack"
    NAK = "nak"
    """Redelivered later."""
    TERM = "term"
    """Never redelivered: malformed or rejected."""


class Retry(Exception):
    """Handle this message again later.

    ``grow``: ``delay`` is the first wait only; later ones follow the consumer's
    backoff (see :func:`redelivery_delay`). For a handler that waits for
    another service (a job's start to be recorded): that service's outage or
    failover may last longer than ``max_deliver`` short waits, and the
    message must not be dropped meanwhile.
    """

    def __init__(self, reason: str, delay: float = 5.0, *, grow: bool = False) -> None:
        super().__init__(reason)
        self.delay = delay
        self.grow = grow

    def wait_s(self, num_delivered: int) -> float:
        """The redelivery delay after the ``num_delivered``-th delivery."""
        return redelivery_delay(num_delivered, self.delay) if self.grow else self.delay


class Reject(Exception):
    """This message can never be handled: terminate it."""


class MsgMeta(msgspec.Struct, frozen=True):
    subject: str
    stream_seq: int
    num_delivered: int
    headers: dict[str, str] | None = None


Handler = Callable[[CloudEvent, MsgMeta], Awaitable[Any]]


class Pull(msgspec.Struct, frozen=True):
    """A durable consumer to pull from, and how: what both pull loops (:func:`consume`,
    :func:`~services.batch_consume.consume_batches`) and their handling go by."""

    stream: str
    consumer: ConsumerConfig
    batch: int = 50
    """Messages asked for per fetch."""
    fetch_timeout: float = 1.0
    decoder: Callable[[bytes], CloudEvent] = decode
    retry_delay: float = 5.0
    """The first redelivery delay after the handler failed unexpectedly (then the backoff)."""

    @property
    def durable(self) -> str:
        return self.consumer.durable_name or ""


def redelivery_delay(num_delivered: int, first: float = SERVICE_BACKOFF[0]) -> float:
    """JetStream redelivery with backoff: the consumer's backoff steps by delivery count,
    so that an outage of minutes does not use up ``max_deliver`` in seconds."""
    steps = (first, *SERVICE_BACKOFF[1:])
    return steps[min(max(num_delivered, 1), len(steps)) - 1]


def message_meta(msg: Msg) -> MsgMeta:
    md = msg.metadata
    return MsgMeta(
        subject=msg.subject,
        stream_seq=md.sequence.stream,
        num_delivered=md.num_delivered,
        headers=dict(msg.headers) if msg.headers else None,
    )


async def handle_message(msg: Msg, handler: Handler, pull: Pull) -> Disposition:
    """Run one message through ``handler``; returns what was done with it."""
    meta = message_meta(msg)
    where = {"subject": meta.subject, "stream_seq": meta.stream_seq, "consumer": pull.durable}
    try:
        event = pull.decoder(msg.data)
    except DecodeError as exc:
        log.error("malformed message terminated: %s", exc, extra=where)
        await msg.term()
        return Disposition.TERM
    where["event_id"] = event.id
    try:
        await handler(event, meta)
    except Reject as exc:
        log.error("message rejected and terminated: %s", exc, extra=where)
        await msg.term()
        return Disposition.TERM
    except Retry as exc:
        delay = exc.wait_s(meta.num_delivered)
        log.warning("handler asked to retry: %s", exc, extra=where | {"delay_s": delay})
        await msg.nak(delay=delay)
        return Disposition.NAK
    except Exception as exc:
        delay = redelivery_delay(meta.num_delivered, pull.retry_delay)
        if is_outage(exc):  # a dependency is away: no traceback per message
            log.warning("handler failed (%r); redelivery in %.0f s", exc, delay, extra=where)
        else:
            log.exception("handler failed; message will be redelivered", extra=where)
        await msg.nak(delay=delay)
        return Disposition.NAK
    await msg.ack()
    return Disposition.ACK


async def bind(js: JetStreamContext, stream: str, config: ConsumerConfig,
               stop: asyncio.Event, *, timeout_s: float = CALL_TIMEOUT_S) -> Any:
    """The durable consumer (created if missing) and a pull subscription on it; each
    request bounded by ``timeout_s`` and retried quickly until it works or ``stop``."""
    durable = config.durable_name or ""

    async def attempt() -> Any:
        await asyncio.wait_for(ensure_consumer(js, stream, config), timeout_s)
        return await asyncio.wait_for(js.pull_subscribe_bind(durable, stream), timeout_s)

    return await retry_call(f"consumer {durable}", attempt, stop=stop,
                            backoff=FAILOVER_BACKOFF, logger=log)


async def fetch_batches(js: JetStreamContext, pull: Pull, stop: asyncio.Event, *,
                        call_timeout_s: float = CALL_TIMEOUT_S) -> AsyncIterator[list[Msg]]:
    """The durable consumer's messages, ``pull.batch`` at a time, until ``stop`` is set.

    Errors of JetStream (no leader, no responders, a request that does not
    come back) are waited out here with :data:`FAILOVER_BACKOFF`, logged once
    per outage: the pull subscription stays, and the next fetch reaches the
    consumer's new leader without another API request. Only a consumer that
    is gone is looked up (and made) again.
    """
    if not pull.durable:
        raise ValueError("a pull loop needs a durable consumer")
    outage = Outage(f"JetStream consumer {pull.durable}", log)
    fetch_timeout = pull.fetch_timeout
    while not stop.is_set():
        sub = await bind(js, pull.stream, pull.consumer, stop, timeout_s=call_timeout_s)
        failures = 0
        try:
            while not stop.is_set():
                try:
                    msgs = await asyncio.wait_for(sub.fetch(pull.batch, timeout=fetch_timeout),
                                                  fetch_timeout + call_timeout_s)
                except (TimeoutError, nats.errors.TimeoutError):
                    continue  # nothing to take (or no leader yet: the next fetch asks again)
                except nats.errors.ConnectionClosedError:
                    return
                except nats.js.errors.NotFoundError as exc:  # the consumer is gone
                    outage.failed(exc, 0.0)
                    break
                except (nats.errors.Error, OSError) as exc:
                    failures += 1
                    delay = FAILOVER_BACKOFF.delay(failures)
                    outage.failed(exc, delay)
                    if await sleep_or_stop(stop, delay):
                        return
                    continue
                failures = 0
                outage.recovered()
                yield msgs
        finally:
            await _unsubscribe(sub, call_timeout_s)


async def _unsubscribe(sub: Any, timeout_s: float) -> None:
    try:
        await asyncio.wait_for(sub.unsubscribe(), timeout_s)
    except Exception as exc:  # the connection may be gone; nothing more to hand back
        log.debug("pull subscription not unsubscribed: %r", exc)


async def consume(js: JetStreamContext, pull: Pull, handler: Handler,
                  stop: asyncio.Event) -> None:
    """Fetch and handle one message at a time until ``stop`` is set."""
    async for msgs in fetch_batches(js, pull, stop):
        for index, msg in enumerate(msgs):
            if stop.is_set():
                await _hand_back(msgs[index:])
                break
            await handle_message(msg, handler, pull)


async def _hand_back(msgs: list[Msg]) -> None:
    for msg in msgs:
        await msg.nak()
