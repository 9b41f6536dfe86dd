"""A pull loop that hands a whole fetched batch to one handler call.

:func:`services.consume.consume` handles one message at a time; a burst of
thousands of results would then cost one database round trip each. Here the
handler gets every decodable message of a ``fetch(N)`` at once (so it can
write them in one transaction) and says per message what to do:

- ``None``: done, ack;
- :class:`~services.consume.Retry`: nak with its delay;
- :class:`~services.consume.Reject`: term, logged with subject and sequence.

Malformed messages are termed and logged before the handler sees the batch.
If the handler raises, nothing of the batch was committed: each message is
then handled alone, so that one message the handler can never take (say,
text the database refuses) does not hold back — and, after ``max_deliver``
redeliveries, lose — every other message fetched with it. Messages that fail
alone, and those not reached within ``isolate_budget_s`` (the database is
down: every one would fail), are nak'ed.
On stop: no new fetch; the batch in hand finishes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence

import msgspec
from nats.aio.msg import Msg
from nats.js import JetStreamContext

from wrtci.proto.events import CloudEvent, DecodeError
from wrtci.services.consume import (
    Disposition,
    MsgMeta,
    Pull,
    Reject,
    Retry,
    fetch_batches,
    message_meta,
    redelivery_delay,
)

log = logging.getLogger(__name__)


class Delivery(msgspec.Struct, frozen=True):
    event: CloudEvent
    meta: MsgMeta


Verdict = Retry | Reject | None
BatchHandler = Callable[[Sequence[Delivery]], Awaitable[Sequence[Verdict]]]


async def handle_batch(msgs: Sequence[Msg], handler: BatchHandler, pull: Pull, *,
                       isolate_budget_s: float = 30.0) -> dict[Disposition, int]:
    """Run one fetched batch through ``handler``; returns counts per action."""
    consumer = pull.durable
    counts = dict.fromkeys(Disposition, 0)
    deliveries: list[Delivery] = []
    kept: list[Msg] = []
    for msg in msgs:
        meta = message_meta(msg)
        try:
            deliveries.append(Delivery(pull.decoder(msg.data), meta))
            kept.append(msg)
        except DecodeError as exc:
            log.error("malformed message terminated: %s", exc,
                      extra={"subject": meta.subject, "stream_seq": meta.stream_seq,
                             "consumer": consumer})
            await msg.term()
            counts[Disposition.TERM] += 1
    if not deliveries:
        return counts
    try:
        verdicts = await _call(handler, deliveries)
    except Exception:
        if len(deliveries) == 1:
            log.exception("handler failed; the message will be redelivered",
                          extra={"consumer": consumer, "subject": deliveries[0].meta.subject,
                                 "stream_seq": deliveries[0].meta.stream_seq})
            await kept[0].nak(delay=redelivery_delay(deliveries[0].meta.num_delivered,
                                                     pull.retry_delay))
            counts[Disposition.NAK] += 1
            return counts
        log.exception("batch handler failed; handling its %d messages one by one",
                      len(kept), extra={"consumer": consumer})
        for action, count in (await _one_by_one(kept, handler, pull,
                                                isolate_budget_s)).items():
            counts[action] += count
        return counts
    for msg, delivery, verdict in zip(kept, deliveries, verdicts, strict=True):
        where = {"subject": delivery.meta.subject, "stream_seq": delivery.meta.stream_seq,
                 "consumer": consumer, "event_id": delivery.event.id}
        if verdict is None:
            await msg.ack()
            counts[Disposition.ACK] += 1
        elif isinstance(verdict, Reject):
            log.error("message rejected and terminated: %s", verdict, extra=where)
            await msg.term()
            counts[Disposition.TERM] += 1
        else:
            delay = verdict.wait_s(delivery.meta.num_delivered)
            log.warning("handler asked to retry: %s", verdict, extra=where | {"delay_s": delay})
            await msg.nak(delay=delay)
            counts[Disposition.NAK] += 1
    return counts


async def _one_by_one(msgs: Sequence[Msg], handler: BatchHandler, pull: Pull,
                      budget_s: float) -> dict[Disposition, int]:
    """Each message as a batch of its own, until ``budget_s`` is spent; the rest: nak."""
    counts = dict.fromkeys(Disposition, 0)
    deadline = time.monotonic() + budget_s
    for index, msg in enumerate(msgs):
        if time.monotonic() > deadline:
            log.error("batch handler still failing; %d messages will be redelivered",
                      len(msgs) - index, extra={"consumer": pull.durable})
            for rest in msgs[index:]:
                await rest.nak(delay=redelivery_delay(rest.metadata.num_delivered,
                                                      pull.retry_delay))
            counts[Disposition.NAK] += len(msgs) - index
            break
        single = await handle_batch([msg], handler, pull)
        for action, count in single.items():
            counts[action] += count
    return counts


async def _call(handler: BatchHandler, deliveries: list[Delivery]) -> Sequence[Verdict]:
    verdicts = await handler(deliveries)
    if len(verdicts) != len(deliveries):
        raise RuntimeError(f"handler returned {len(verdicts)} verdicts "
                           f"for {len(deliveries)} messages")
    return verdicts


async def consume_batches(js: JetStreamContext, pull: Pull, handler: BatchHandler,
                          stop: asyncio.Event) -> None:
    """Fetch up to ``pull.batch`` messages at a time and handle them together until ``stop``."""
    async for msgs in fetch_batches(js, pull, stop):
        await handle_batch(msgs, handler, pull)
