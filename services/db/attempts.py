"""An attempt's outcome as PostgreSQL stores it, in ``job_attempts`` (each attempt) and in
``jobs`` (the latest one): the field group every Struct read from those rows shares."""

from __future__ import annotations

import datetime as dt

import msgspec


class AttemptOutcome(msgspec.Struct, kw_only=True):
    """How an attempt ended and where it ran (None: not known, or not yet)."""

    result: str | None
    error_code: str | None
    error_message: str | None
    lab: str | None
    device: str | None
    log_key: str | None
    """The console log's object key."""
    started_at: dt.datetime | None
    finished_at: dt.datetime | None
