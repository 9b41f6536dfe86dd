"""Values kept in the KV buckets: the live state people and the scheduler watch."""

from __future__ import annotations

import datetime as dt
from typing import TypeVar

import msgspec

from wrtci.proto.events import LabDevice
from wrtci.proto.limits import Count, Name, Size, Text
from wrtci.proto.model import DeviceHealth, DeviceState

R = TypeVar("R")


class LabRecord(msgspec.Struct, frozen=True, kw_only=True):
    """``<prefix>_labs`` bucket, key = lab; expires unless the lab heartbeats."""

    lab: Name
    devices: list[LabDevice] = []
    heartbeat_at: dt.datetime
    version: Name = ""


class DeviceRecord(msgspec.Struct, frozen=True, kw_only=True):
    """``<prefix>_devices`` bucket, key = ``<lab>.<device>``."""

    lab: Name
    device: Name
    device_type: Name
    features: list[Name] = []
    state: DeviceState = DeviceState.IDLE
    health: DeviceHealth = DeviceHealth.UNKNOWN
    consecutive_failures: Count = 0
    last_check_at: dt.datetime | None = None
    updated_at: dt.datetime
    last_passed_at: dt.datetime | None = None
    """When the device last passed a health check (the health issue says so)."""


class ControlRecord(msgspec.Struct, frozen=True, kw_only=True):
    """``<prefix>_control`` bucket, key ``scheduler``: pause / drain switch."""

    paused: bool = False
    reason: Text = ""
    updated_at: dt.datetime | None = None
    jobs_held: bool = False
    """``wrtci drain``: labs get no queued job either (the job consumers are paused);
    jobs already running finish."""


class LogBufferFigures(msgspec.Struct, kw_only=True):
    """What a log writer's buffer holds and what it could not keep: counted by
    ``services.logs.buffer``, published in :class:`LogWriterRecord`."""

    memory_bytes: Size = 0
    spilled_bytes: Size = 0
    dropped_bytes: Size = 0
    """Since the writer started: chunk text not stored because memory and disk were full."""
    dropped_chunks: Size = 0
    truncated_logs: Size = 0
    """Since the writer started: logs stored with text missing (dropped here, or by the
    lab while NATS was away; marked in the object)."""


class LogWriterRecord(LogBufferFigures, frozen=True, kw_only=True):
    """``<prefix>_control`` bucket, key ``logs-writer.<writer>``: one log writer's buffer.

    Written by each log writer when its figures change, shown by ``wrtci logs status``.
    """

    writer: Name
    memory_limit: Size = 0
    spill_limit: Size = 0
    updated_at: dt.datetime


_encoder = msgspec.json.Encoder()


def encode_record(record: msgspec.Struct) -> bytes:
    return _encoder.encode(record)


def decode_record(payload: bytes, record_type: type[R]) -> R:
    return msgspec.json.decode(payload, type=record_type)
