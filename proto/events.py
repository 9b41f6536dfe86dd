"""CloudEvents 1.0 (structured JSON mode) for everything that happens in wrtci.

Every event is one frozen Struct: the CloudEvents attributes plus a typed
``data``. The CloudEvents ``type`` attribute is the msgspec tag, so one
decoder turns any message into the right class and rejects anything else.

Schema evolution: new fields get defaults; a field's type never changes.
"""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Self, TypeVar

import msgspec

from wrtci.proto.limits import Attempt, Count, Int32, Name, Seconds, Size, Text
from wrtci.proto.model import (
    Artifact,
    DeviceCondition,
    DeviceHealth,
    DeviceState,
    ErrorCode,
    FirmwareState,
    Image,
    JobResult,
    PriorityClass,
    PullRequest,
    SourceKind,
    TestPlan,
    TestResult,
)

TYPE_NAMESPACE = "org.openwrt.wrtci"


class _Kind:
    """``Event.kind``: the CloudEvents type without the namespace."""

    def __get__(self, obj: object, cls: type[msgspec.Struct]) -> str:
        tag = cls.__struct_config__.tag
        if not isinstance(tag, str):
            raise AttributeError(f"{cls.__name__} is not a concrete event type")
        return tag.removeprefix(TYPE_NAMESPACE + ".")


class CloudEvent(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    specversion: Name = "1.0"
    id: Name
    source: Name
    time: dt.datetime
    subject: Name | None = None
    """The object the event is about (firmware, job, device id)."""
    datacontenttype: Name = "application/json"

    kind = _Kind()
    """Short type, e.g. ``firmware.discovered``; also the subject suffix."""

    @classmethod
    def build(
        cls,
        data: msgspec.Struct,
        *,
        source: str,
        id: str | None = None,
        subject: str | None = None,
        time: dt.datetime | None = None,
    ) -> Self:
        """A new event; pass a deterministic ``id`` wherever the event can repeat."""
        return cls(
            id=id or str(uuid.uuid4()),
            source=source,
            time=time or dt.datetime.now(dt.UTC),
            subject=subject,
            data=data,  # type: ignore[call-arg]
        )


def _t(kind: str) -> str:
    return f"{TYPE_NAMESPACE}.{kind}"


# -- firmware -------------------------------------------------------------------


class FirmwareDiscoveredData(msgspec.Struct, frozen=True, kw_only=True):
    firmware_id: Name
    source_kind: SourceKind
    priority_class: PriorityClass
    channel: Name
    """snapshot, stable, oldstable, a release branch, pr, custom."""
    version: Name
    """version_number: ``SNAPSHOT``, ``23.05.5``, ..."""
    revision: Name | None = None
    """version_code, e.g. ``r24106-10cc5fcd00``."""
    images: list[Image] = []
    tree_name: Name = "openwrt"
    git_repository_url: Text | None = None
    git_commit_hash: Name | None = None
    git_branch: Name | None = None
    pull_request: PullRequest | None = None
    submitter: Name | None = None
    url: Text | None = None
    """Human-facing page of the firmware (release dir, PR, build)."""
    plans: list[Name] | None = None
    """Names of the test plans to run; None: the plans its source kind gets by default."""


class FirmwareDiscovered(CloudEvent, tag=_t("firmware.discovered")):
    data: FirmwareDiscoveredData


class FirmwareStateData(msgspec.Struct, frozen=True, kw_only=True):
    firmware_id: Name
    state: FirmwareState
    previous: FirmwareState | None = None
    reason: Text | None = None


class FirmwareStateChanged(CloudEvent, tag=_t("firmware.state")):
    data: FirmwareStateData


class RequestData(msgspec.Struct, frozen=True, kw_only=True):
    """Who asked for an operator action (cancel, retry) and why: the part of every
    request event that is not the id of the object it is about."""

    requested_by: Text = ""
    reason: Text | None = None


class FirmwareRequestData(RequestData, kw_only=True):
    """An operator's (or the trigger's) request about a whole firmware: cancel or retry."""

    firmware_id: Name


class FirmwareCancelRequested(CloudEvent, tag=_t("firmware.cancel_requested")):
    data: FirmwareRequestData


class FirmwareRetryRequested(CloudEvent, tag=_t("firmware.retry_requested")):
    data: FirmwareRequestData


# -- jobs -----------------------------------------------------------------------


class JobSpec(msgspec.Struct, frozen=True, kw_only=True):
    """Everything a lab needs to run a job; the message on the JOBS stream."""

    job_id: Name
    attempt: Attempt = 1
    firmware_id: Name
    device_type: Name
    image: Image
    plans: list[TestPlan]
    priority: Int32
    timeout_s: Seconds
    firmware_version: Name | None = None
    firmware_revision: Name | None = None


class JobCreated(CloudEvent, tag=_t("job.created")):
    data: JobSpec


class JobAttemptData(msgspec.Struct, frozen=True, kw_only=True):
    """What a lab's event about a job it runs is about: which attempt of which job,
    on which of the lab's devices. Shared by every event of that run."""

    job_id: Name
    attempt: Attempt
    lab: Name
    device: Name


class JobStartedData(JobAttemptData, kw_only=True):
    deadline: dt.datetime | None = None


class JobStarted(CloudEvent, tag=_t("job.started")):
    data: JobStartedData


class JobProgressData(JobAttemptData, kw_only=True):
    """Also the job's heartbeat: the timeout service watches for it."""

    stage: Name
    """download, flash, boot, test, upload"""
    message: Text = ""


class JobProgress(CloudEvent, tag=_t("job.progress")):
    data: JobProgressData


class JobFinishedData(JobAttemptData, kw_only=True):
    result: JobResult
    error_code: ErrorCode | None = None
    error_message: Text | None = None
    tests: list[TestResult] = []
    log_key: Name | None = None
    artifacts: list[Artifact] = []
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    suite_revision: str | None = None
    """git revision of the lab's test-suite checkout that ran the job."""


class JobFinished(CloudEvent, tag=_t("job.finished")):
    data: JobFinishedData


class JobCancelledData(msgspec.Struct, frozen=True, kw_only=True):
    job_id: Name
    attempt: Attempt | None = None
    reason: Text = ""


class JobCancelled(CloudEvent, tag=_t("job.cancelled")):
    data: JobCancelledData


class JobRequestData(RequestData, kw_only=True):
    """An operator's request about one job: cancel or retry."""

    job_id: Name


class JobRetryRequested(CloudEvent, tag=_t("job.retry_requested")):
    data: JobRequestData


class JobCancelRequested(CloudEvent, tag=_t("job.cancel_requested")):
    data: JobRequestData


# -- labs and devices ----------------------------------------------------------


class DeviceHealthData(DeviceCondition, kw_only=True):
    lab: Name
    device: Name
    device_type: Name
    log_url: str | None = None
    """The API path of the failing check's console log (``proto.storage.health_log_path``);
    the notifier's health issue links it on wrtci's web address."""
    last_passed_at: dt.datetime | None = None
    """When the device last passed a check, if the lab knows."""


class DeviceHealthChanged(CloudEvent, tag=_t("device.health")):
    data: DeviceHealthData


class LabDevice(msgspec.Struct, frozen=True, kw_only=True):
    name: Name
    device_type: Name
    features: list[Name] = []
    state: DeviceState = DeviceState.IDLE
    health: DeviceHealth = DeviceHealth.UNKNOWN
    image_type: Name | None = None
    """Image type the device boots (lab config / target file); None: any. Fan-out
    picks it (services/scheduler/fanout.py); image_filesystem likewise, if named."""
    image_filesystem: Name | None = None


class LabOnlineData(msgspec.Struct, frozen=True, kw_only=True):
    lab: Name
    devices: list[LabDevice] = []
    version: Name = ""


class LabOnline(CloudEvent, tag=_t("lab.online")):
    data: LabOnlineData


class LabOfflineData(msgspec.Struct, frozen=True, kw_only=True):
    lab: Name
    reason: Text = ""


class LabOffline(CloudEvent, tag=_t("lab.offline")):
    data: LabOfflineData


# -- console logs -----------------------------------------------------------------


class LogChunkData(JobAttemptData, kw_only=True):
    """A piece of a job's console log; ``seq`` orders and dedupes chunks."""

    seq: Count
    """Order within (job, attempt, stream), from 0; a resent chunk keeps its seq."""
    text: Text
    final: bool = False
    """Last chunk of this stream: the log writer closes the object."""
    stream: Name = "console"
    """``console`` or the name of an artifact (``junit.xml``, ``results.json``)."""
    run: Count = 1
    """Which delivery of the job message produced the chunk: a job handed back
    (lab shutdown, lab lost) runs again under the same attempt, and its log
    starts over; the log writer keeps the run that sent the final chunk."""
    dropped_bytes: Size = 0
    """On the final chunk: bytes of this stream the lab dropped because NATS was
    away longer than its buffer holds (a marker line stands where they were)."""


class LogChunk(CloudEvent, tag=_t("log.chunk")):
    data: LogChunkData


# -- the union --------------------------------------------------------------------

Event = (
    FirmwareDiscovered
    | FirmwareStateChanged
    | FirmwareCancelRequested
    | FirmwareRetryRequested
    | JobCreated
    | JobStarted
    | JobProgress
    | JobFinished
    | JobCancelled
    | JobRetryRequested
    | JobCancelRequested
    | DeviceHealthChanged
    | LabOnline
    | LabOffline
    | LogChunk
)

EVENT_TYPES: tuple[type[CloudEvent], ...] = Event.__args__  # type: ignore[attr-defined]
EVENT_BY_KIND: dict[str, type[CloudEvent]] = {cls.kind: cls for cls in EVENT_TYPES}

# Events a lab publishes (under its own subject scope); all others are central.
LAB_EVENT_TYPES: tuple[type[CloudEvent], ...] = (
    JobStarted,
    JobProgress,
    JobFinished,
    DeviceHealthChanged,
    LabOnline,
    LabOffline,
    LogChunk,
)

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


class DecodeError(ValueError):
    """A message that is not a wrtci CloudEvent."""


def encode(event: CloudEvent) -> bytes:
    return _encoder.encode(event)


def decode(payload: bytes) -> CloudEvent:
    try:
        return _decoder.decode(payload)
    except msgspec.DecodeError as exc:
        raise DecodeError(str(exc)) from exc


E = TypeVar("E", bound=CloudEvent)


def decode_as(payload: bytes, event_type: type[E]) -> E:
    """Decode and insist on one event type (e.g. a JobCreated on the JOBS stream)."""
    event = decode(payload)
    if not isinstance(event, event_type):
        raise DecodeError(f"expected {event_type.kind}, got {type(event).kind}")
    return event


# The subjects' object ids, for filters such as ``wrtci events --job X``.
def object_ids(event: CloudEvent) -> dict[str, str]:
    data = event.data  # type: ignore[attr-defined]
    ids: dict[str, str] = {}
    for field in ("firmware_id", "job_id", "lab", "device", "device_type"):
        value = getattr(data, field, None)
        if isinstance(value, str):
            ids[field] = value
    if isinstance(data, JobSpec):
        ids["device_type"] = data.device_type
    return ids
