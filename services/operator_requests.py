"""Retry / cancel requests of a job or a firmware, as the scheduler consumes them.

The ``wrtci job|firmware retry|cancel`` command and the API's control
endpoints both build their events here, so both speak exactly the same way.
"""

from __future__ import annotations

import uuid
from typing import Literal

from wrtci.core.runtime import EventPublisher
from wrtci.proto.events import (
    CloudEvent,
    FirmwareCancelRequested,
    FirmwareRequestData,
    FirmwareRetryRequested,
    JobCancelRequested,
    JobRequestData,
    JobRetryRequested,
)

Noun = Literal["job", "firmware"]
Verb = Literal["retry", "cancel"]
NOUNS: tuple[Noun, ...] = ("job", "firmware")
VERBS: tuple[Verb, ...] = ("retry", "cancel")


def request_event(noun: str, verb: str, object_id: str, reason: str | None,
                  requested_by: str, source: str = "wrtci/cli") -> CloudEvent:
    if noun not in NOUNS or verb not in VERBS:
        raise ValueError(f"no such request: {noun} {verb}")
    if noun == "job":
        data = JobRequestData(job_id=object_id, requested_by=requested_by, reason=reason)
        event_type = JobRetryRequested if verb == "retry" else JobCancelRequested
    else:
        data = FirmwareRequestData(firmware_id=object_id, requested_by=requested_by,
                                           reason=reason)
        event_type = FirmwareRetryRequested if verb == "retry" else FirmwareCancelRequested
    # Each request is new (a second retry is a second request): a random id.
    return event_type.build(data, source=source, subject=object_id,  # type: ignore[arg-type]
                            id=f"{noun}.{verb}:{object_id}:{uuid.uuid4().hex}")


async def publish_request(publisher: EventPublisher, noun: str, verb: str, object_id: str,
                          reason: str | None, requested_by: str,
                          source: str = "wrtci/cli") -> CloudEvent:
    event = request_event(noun, verb, object_id, reason, requested_by, source)
    await publisher.publish(event)
    return event
