"""Which subject an event is published on."""

from __future__ import annotations

from wrtci.proto.events import LAB_EVENT_TYPES, CloudEvent, LogChunk
from wrtci.proto.subjects import Subjects


def event_subject(subjects: Subjects, event: CloudEvent) -> str:
    """Central events under ``<prefix>.events``; a lab's under its own scope."""
    if isinstance(event, LogChunk):
        return subjects.log_chunk(event.data.lab, event.data.job_id)
    if isinstance(event, LAB_EVENT_TYPES):
        return subjects.lab_event(event.data.lab, event.kind)  # type: ignore[attr-defined]
    return subjects.event(event.kind)
