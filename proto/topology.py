"""The JetStream topology: streams, consumer templates and KV buckets.

Declared here, next to the subjects they carry, and applied idempotently by
``wrtci nats apply`` (and by ``wrtci up``). The server configuration files are
in the top-level ``nats/`` directory; this module cannot live there because a
Python package called ``nats`` would shadow the nats-py client.
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Iterable, Sequence

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from wrtci.proto.subjects import Priority, Subjects

DAY = 24 * 3600.0

EVENTS_MAX_AGE = 90 * DAY
EVENTS_DEDUPE_WINDOW = 2 * 3600.0
JOBS_DEDUPE_WINDOW = 2 * 3600.0
LOGS_MAX_AGE = 7 * DAY
LOGS_DEDUPE_WINDOW = 15 * 60.0
LAB_HEARTBEAT_TTL = 90.0
"""A lab whose record is not refreshed within this many seconds is gone."""

JOBS_MAX_CONSUMERS = 100_000
"""Five job consumers per device type. nats-server 2.15 caps a stream at 1,000
consumers unless the stream sets its own limit (and -1 no longer means unlimited)."""
JOB_ACK_WAIT = 120.0
"""A lab holding a job must send in-progress acks more often than this."""
JOB_MAX_DELIVER = 5
SERVICE_ACK_WAIT = 60.0
SERVICE_MAX_DELIVER = 8
SERVICE_BACKOFF = [1.0, 5.0, 15.0, 60.0, 120.0, 300.0, 600.0]


def _stream(name: str, description: str, subjects: list[str], replicas: int,
            **limits: object) -> StreamConfig:
    """Every stream is kept on disk and, when a limit is reached, drops its oldest
    messages; ``limits`` (retention, ages, windows) set one stream apart."""
    return StreamConfig(name=name, description=description, subjects=subjects,
                        storage=StorageType.FILE, discard=DiscardPolicy.OLD,
                        num_replicas=replicas, **limits)  # type: ignore[arg-type]


def streams(subjects: Subjects, replicas: int = 1) -> list[StreamConfig]:
    return [
        _stream(subjects.events_stream, "Everything that happened in wrtci, as CloudEvents",
                subjects.all_events(), replicas, retention=RetentionPolicy.LIMITS,
                max_age=EVENTS_MAX_AGE, duplicate_window=EVENTS_DEDUPE_WINDOW),
        _stream(subjects.jobs_stream, "Queued jobs, one subject per priority and device type",
                [subjects.all_jobs()], replicas, retention=RetentionPolicy.WORK_QUEUE,
                duplicate_window=JOBS_DEDUPE_WINDOW, max_consumers=JOBS_MAX_CONSUMERS),
        _stream(subjects.logs_stream, "Console log chunks streamed by labs while jobs run",
                [subjects.all_logs()], replicas, retention=RetentionPolicy.LIMITS,
                max_age=LOGS_MAX_AGE, duplicate_window=LOGS_DEDUPE_WINDOW),
    ]


def _bucket(bucket: str, description: str, replicas: int, *, history: int,
            ttl: float | None = None, direct: bool = True) -> KeyValueConfig:
    """Every bucket is kept on disk. Direct get is on unless a bucket says otherwise:
    a lab reads its own keys through it (see ``ensure_key_value``)."""
    return KeyValueConfig(bucket=bucket, description=description, history=history, ttl=ttl,
                          storage=StorageType.FILE, replicas=replicas, direct=direct)


def key_values(subjects: Subjects, replicas: int = 1) -> list[KeyValueConfig]:
    return [
        _bucket(subjects.labs_bucket, "Labs online, refreshed by heartbeat", replicas,
                history=1, ttl=LAB_HEARTBEAT_TTL),
        _bucket(subjects.devices_bucket, "Device state and health per lab device", replicas,
                history=5),
        _bucket(subjects.control_bucket, "Operator switches: scheduler pause / drain", replicas,
                history=10),
        secrets_bucket(subjects, replicas),
    ]


def secrets_bucket(subjects: Subjects, replicas: int = 1) -> KeyValueConfig:
    """The central services' secrets (``core/publisher.py``: the ``Nats-Msg-Id`` key).

    Only central users may read it: the generated lab permissions
    (``services/natsauth.py``) name no subject of this bucket. No direct get,
    so that nothing but the stream's own API serves its messages.
    """
    return _bucket(subjects.secrets_bucket,
                   "Central secrets: the key of central events' Nats-Msg-Id", replicas,
                   history=1, direct=False)


# -- consumer templates ------------------------------------------------------------


def service_consumer(
    durable: str,
    filter_subjects: Sequence[str],
    *,
    ack_wait: float = SERVICE_ACK_WAIT,
    max_deliver: int = SERVICE_MAX_DELIVER,
) -> ConsumerConfig:
    """A durable pull consumer that a service's replicas share."""
    backoff = SERVICE_BACKOFF[: max_deliver - 1] if max_deliver > 1 else None
    return ConsumerConfig(
        durable_name=durable,
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        filter_subjects=list(filter_subjects),
        ack_wait=ack_wait,
        max_deliver=max_deliver,
        backoff=backoff,
        max_ack_pending=1000,
    )


def job_consumer(
    subjects: Subjects,
    priority: Priority | int,
    device_type: str,
    *,
    ack_wait: float = JOB_ACK_WAIT,
) -> ConsumerConfig:
    """The durable that every lab with ``device_type`` pulls ``priority`` jobs from."""
    return ConsumerConfig(
        durable_name=subjects.job_consumer(priority, device_type),
        ack_policy=AckPolicy.EXPLICIT,
        deliver_policy=DeliverPolicy.ALL,
        filter_subject=subjects.job(priority, device_type),
        ack_wait=ack_wait,
        max_deliver=JOB_MAX_DELIVER,
        max_ack_pending=10_000,
    )


# -- apply -------------------------------------------------------------------------


class Change(enum.StrEnum):
    CREATED = "created"
    UPDATED = "updated"
    UNCHANGED = "unchanged"


def _differs(desired: object, actual: object) -> list[str]:
    """Names of the fields set in ``desired`` whose value ``actual`` lacks."""
    changed = []
    for field in dataclasses.fields(desired):  # type: ignore[arg-type]
        want = getattr(desired, field.name)
        if want is None or (field.name == "description" and not want):
            continue
        have = getattr(actual, field.name, None)
        if isinstance(want, float | int) and isinstance(have, float | int):
            if abs(float(want) - float(have)) > 1e-6:
                changed.append(field.name)
        elif want != have:
            changed.append(field.name)
    return changed


async def ensure_stream(js: JetStreamContext, config: StreamConfig) -> Change:
    try:
        info = await js.stream_info(config.name)  # type: ignore[arg-type]
    except NotFoundError:
        await js.add_stream(config)
        return Change.CREATED
    if _differs(config, info.config):
        await js.update_stream(config)
        return Change.UPDATED
    return Change.UNCHANGED


async def ensure_key_value(js: JetStreamContext, config: KeyValueConfig) -> Change:
    try:
        info = await js.stream_info(f"KV_{config.bucket}")
    except NotFoundError:
        await js.create_key_value(config)
        return Change.CREATED
    wanted = {
        "description": config.description,
        "max_msgs_per_subject": config.history,
        "max_age": config.ttl or 0.0,
        # Direct get: a lab reads its own keys with a permission on the key's
        # subject ($JS.API.DIRECT.GET.KV_<bucket>.$KV.<bucket>.<lab>.>), not
        # STREAM.MSG.GET, whose subject cannot say which key is read.
        "allow_direct": bool(config.direct),
    }
    drifted = [k for k, v in wanted.items() if (getattr(info.config, k) or 0.0) != v]
    if drifted:
        await js.update_stream(dataclasses.replace(info.config, **wanted))
        return Change.UPDATED
    return Change.UNCHANGED


async def ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> Change:
    """Create or update a durable consumer; safe to call from many processes."""
    try:
        info = await js.consumer_info(stream, config.durable_name)  # type: ignore[arg-type]
    except NotFoundError:
        await js.add_consumer(stream, config)
        return Change.CREATED
    if _differs(config, info.config):
        await js.add_consumer(stream, config)
        return Change.UPDATED
    return Change.UNCHANGED


async def ensure_job_consumers(
    js: JetStreamContext,
    subjects: Subjects,
    device_types: Iterable[str],
    *,
    ack_wait: float = JOB_ACK_WAIT,
) -> dict[str, Change]:
    """The job consumers (one per priority) of each device type.

    Only central services call this (``wrtci nats apply``, ``wrtci lab add``
    and the scheduler when a lab announces a new device type): a lab has no
    permission to create consumers and only binds to these.
    """
    changes: dict[str, Change] = {}
    for device_type in sorted(set(device_types)):
        for priority in Priority:
            config = job_consumer(subjects, priority, device_type, ack_wait=ack_wait)
            changes[f"consumer {config.durable_name} ({device_type})"] = await ensure_consumer(
                js, subjects.jobs_stream, config)
    return changes


async def apply(js: JetStreamContext, subjects: Subjects, replicas: int = 1,
                device_types: Iterable[str] = ()) -> dict[str, Change]:
    """Create or update every stream, bucket and the job consumers of ``device_types``."""
    changes: dict[str, Change] = {}
    for stream in streams(subjects, replicas):
        changes[f"stream {stream.name}"] = await ensure_stream(js, stream)
    for kv in key_values(subjects, replicas):
        changes[f"kv {kv.bucket}"] = await ensure_key_value(js, kv)
    changes.update(await ensure_job_consumers(js, subjects, device_types))
    return changes
