"""Pull requests on the job consumers, all answered through one reply subscription.

A pull request for one message gets one answer: the job itself, or a status
(404 none waiting, 408 expired, 409 busy, 503 no such consumer). Asking it with
a fresh inbox subscription each time costs a SUB and an UNSUB on the wire and
a subscription, a queue and a task in the client, which a lab of many idle
devices pays on every look. Here one wildcard subscription per connection
takes every answer:

* a status comes on the request's own reply subject (``<inbox>.<token>``);
* a job comes under its own subject, and its ack subject names the consumer:
  so only one request per consumer is outstanding at a time (per ``Puller``),
  and a job on a consumer answers that one.

A job whose request was given up (its answer came after the timeout, e.g. a
client too busy to read) goes to ``on_late`` (the job queue gives it to a
waiting device) or is handed back at once with a nak, never left in the
consumer until its ack wait ends.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
from collections.abc import Callable

import nats.errors
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from wrtci.core.swallow import logged

log = logging.getLogger(__name__)

REQUEST_TIMEOUT = 5.0
"""Seconds past the request's own ``expires`` that an answer may take."""
NO_MESSAGE = frozenset({"404", "408", "409"})
"""Pull answers without a job: none waiting, request expired, consumer busy/deleted."""


JS_API = "$JS.API"
"""JetStream's API subject prefix (without a JetStream domain)."""


class PullFailed(Exception):
    """The consumer does not exist (yet), or NATS did not answer."""

    def __init__(self, message: str, *, missing: bool = False) -> None:
        super().__init__(message)
        self.missing = missing


class Puller:
    """One lab connection's pull requests on the consumers of one stream."""

    def __init__(self, nc: Client, stream: str, *, api: str = JS_API,
                 timeout: float = REQUEST_TIMEOUT,
                 on_late: Callable[[str, Msg], bool] | None = None) -> None:
        """``on_late(consumer, job)``: True when it took a job that came too late."""
        self.nc = nc
        self.on_late = on_late
        self.stream = stream
        self.api = api
        self.timeout = timeout
        self.requests = 0
        self.timeouts = 0
        """Requests given up: no answer within their time (a client too busy to read)."""
        self.late_jobs = 0
        """Jobs that came after their request was given up (and were dealt with)."""
        self._prefix = ""
        self._sub: Subscription | None = None
        self._starting = asyncio.Lock()
        self._tokens = itertools.count(1)
        self._waiting: dict[str, asyncio.Future[Msg]] = {}
        self._asking: dict[str, str] = {}
        """Consumer -> token of its outstanding request."""
        self._locks: dict[str, asyncio.Lock] = {}

    async def pull(self, consumer: str, expires: float | None) -> Msg | None:
        """One job from ``consumer``: at once (``no_wait``) or within ``expires`` s.

        None when there is none; :class:`PullFailed` when the consumer is missing
        or NATS did not answer.
        """
        if self._sub is None:
            await self._start()
        lock = self._locks.get(consumer)
        if lock is None:
            lock = self._locks[consumer] = asyncio.Lock()
        async with lock:
            msg = await self._request(consumer, expires)
        status = msg.headers.get("Status") if msg.headers else None
        if status is None:
            return msg
        if status in NO_MESSAGE:
            return None
        if status == "503":
            raise PullFailed(f"no consumer {consumer}", missing=True)
        raise PullFailed(f"{consumer}: status {status} {msg.headers.get('Description')}")

    async def _request(self, consumer: str, expires: float | None) -> Msg:
        if expires is None:
            body = {"batch": 1, "no_wait": True}
        else:
            body = {"batch": 1, "expires": int(expires * 1e9)}
        token = str(next(self._tokens))
        answer: asyncio.Future[Msg] = asyncio.get_running_loop().create_future()
        self._waiting[token] = answer
        self._asking[consumer] = token
        self.requests += 1
        try:
            await self.nc.publish(f"{self.api}.CONSUMER.MSG.NEXT.{self.stream}.{consumer}",
                                  json.dumps(body).encode(), reply=f"{self._prefix}.{token}")
            return await asyncio.wait_for(answer, (expires or 0.0) + self.timeout)
        except (TimeoutError, nats.errors.TimeoutError) as exc:
            self.timeouts += 1
            raise PullFailed(f"{consumer}: no answer within "
                             f"{(expires or 0.0) + self.timeout:g} s") from exc
        except (nats.errors.ConnectionClosedError,
                nats.errors.ConnectionReconnectingError) as exc:
            raise PullFailed(f"{consumer}: {type(exc).__name__}") from None
        finally:
            del self._waiting[token]
            del self._asking[consumer]

    async def _start(self) -> None:
        async with self._starting:
            if self._sub is None:
                self._prefix = self.nc.new_inbox()
                self._sub = await self.nc.subscribe(f"{self._prefix}.*", cb=self._on_answer)

    async def _on_answer(self, msg: Msg) -> None:
        if msg.subject.startswith(self._prefix):  # a status, on the request's reply subject
            answer = self._waiting.get(msg.subject.rsplit(".", 1)[1])
            if answer is not None and not answer.done():
                answer.set_result(msg)
            return
        try:
            consumer = msg.metadata.consumer  # a job: its ack subject names the consumer
        except Exception:  # not a JetStream delivery: nothing we asked for
            log.warning("unexpected message on the job pull inbox",
                        extra={"subject": msg.subject})
            return
        token = self._asking.get(consumer)
        answer = self._waiting.get(token) if token is not None else None
        if answer is not None and not answer.done():
            answer.set_result(msg)
            return
        if self.on_late is None or not self.on_late(consumer, msg):
            log.warning("job came after its pull request was given up: handed back",
                        extra={"consumer": consumer, "subject": msg.subject})
            # not handed back: redelivered after the ack wait
            with logged("late job not handed back", log, consumer=consumer):
                await msg.nak()
        self.late_jobs += 1

    async def close(self) -> None:
        if self._sub is not None:
            # closing: the connection may be gone
            with logged("job pull inbox not unsubscribed", log, level=logging.DEBUG):
                await self._sub.unsubscribe()
            self._sub = None
