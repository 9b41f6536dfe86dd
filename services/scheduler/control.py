"""Pause / drain switch: the ``scheduler`` key of the control KV bucket.

Operators flip it with ``wrtci scheduler pause|drain|resume``; every scheduler
replica watches it. While paused the scheduler fetches no new firmware events
(they wait in the stream, nothing is lost); jobs already queued or running go
on, so the pipeline empties.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from nats.js.kv import KV_DEL, KV_PURGE, KeyValue

from wrtci.core.kv import watch_bucket
from wrtci.proto.records import ControlRecord, decode_record, encode_record
from wrtci.proto.subjects import Subjects

log = logging.getLogger(__name__)

KEY = "scheduler"
INTAKE_CONSUMER = "scheduler-intake"
"""The durable consumer of new work that the switch pauses."""


async def read_control(js: JetStreamContext, subjects: Subjects) -> ControlRecord:
    kv = await js.key_value(subjects.control_bucket)
    try:
        entry = await kv.get(KEY)
    except KeyNotFoundError:
        return ControlRecord()
    return decode_record(entry.value, ControlRecord) if entry.value else ControlRecord()


async def write_control(
    js: JetStreamContext, subjects: Subjects, *, paused: bool, reason: str = "",
    jobs_held: bool = False,
) -> ControlRecord:
    record = ControlRecord(paused=paused, reason=reason, updated_at=dt.datetime.now(dt.UTC),
                           jobs_held=jobs_held)
    kv = await js.key_value(subjects.control_bucket)
    await kv.put(KEY, encode_record(record))
    return record


class ControlSwitch:
    """The current switch position, kept up to date by a KV watch."""

    def __init__(self, js: JetStreamContext, subjects: Subjects) -> None:
        self.js = js
        self.subjects = subjects
        self.record = ControlRecord()
        self.ready = asyncio.Event()
        self._paused = asyncio.Event()
        self._running = asyncio.Event()
        self._running.set()

    @property
    def paused(self) -> bool:
        return self.record.paused

    async def wait_paused(self) -> None:
        await self._paused.wait()

    async def wait_running(self) -> None:
        await self._running.wait()

    def _set(self, record: ControlRecord) -> None:
        changed = record.paused != self.record.paused
        self.record = record
        if record.paused:
            self._running.clear()
            self._paused.set()
        else:
            self._paused.clear()
            self._running.set()
        if changed:
            log.warning("scheduler %s", "paused" if record.paused else "resumed",
                        extra={"reason": record.reason})

    async def run(self, stop: asyncio.Event) -> None:
        await watch_bucket(self.js, self.subjects.control_bucket, stop, self._apply, self.ready,
                           KEY)

    async def _apply(self, entry: KeyValue.Entry) -> None:
        if entry.operation in (KV_DEL, KV_PURGE) or not entry.value:
            self._set(ControlRecord())
            return
        try:
            self._set(decode_record(entry.value, ControlRecord))
        except msgspec.DecodeError as exc:
            log.error("control entry ignored: %s", exc)
        self.ready.set()
