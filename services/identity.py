"""Who may speak for a job attempt: the identity check on every lab event.

A lab's events, log chunks and results are published under its own subjects
(``<prefix>.lab.<lab>.…``, enforced by its NATS permissions), so the subject
names the sender. This module decides whether that sender holds the attempt
an event is about. The record of who holds an attempt is the ``jobs`` row the
timeout service keeps (``jobs.lab`` of the current attempt); the scheduler,
the timeout service, the log writer and the results service all ask it, so
they agree.

Rules:

- ``job.started`` is accepted from a lab that may run the job's device type
  (registered with ``wrtci lab add`` and not revoked; on an installation
  without registrations, announced by that lab), and only if nobody else
  holds the attempt — or its holder has been silent longer than the takeover
  window, which is when JetStream hands the job to another lab.
- Every later event (progress, finished, log chunks) only from the holder.

A rejected event is logged once, counted in :data:`REJECTED` and never stored.
"""

from __future__ import annotations

import collections
import logging

import asyncpg
import msgspec

from wrtci.proto.topology import JOB_ACK_WAIT

log = logging.getLogger(__name__)

TAKEOVER_AFTER_S = JOB_ACK_WAIT * 0.9
"""A holder silent this long has lost the job to JetStream's redelivery."""

REJECTED: collections.Counter[tuple[str, str]] = collections.Counter()
"""Metric ``wrtci_lab_events_rejected_total{service, kind}``: refused lab events."""


def count_rejection(service: str, kind: str) -> None:
    REJECTED[(service, kind)] += 1


def rejection_metrics() -> str:
    """The counter in the Prometheus text format."""
    lines = ["# TYPE wrtci_lab_events_rejected_total counter"]
    for (service, kind), value in sorted(REJECTED.items()):
        lines.append(f'wrtci_lab_events_rejected_total{{service="{service}",kind="{kind}"}} '
                     f"{value}")
    return "\n".join(lines) + "\n"


class Holder(msgspec.Struct, frozen=True, kw_only=True):
    """What the record says of one attempt."""

    exists: bool
    """The job exists and has (had) this attempt."""
    current: bool = False
    """It is the job's current attempt (the others are over)."""
    state: str | None = None
    lab: str | None = None
    device_type: str | None = None
    silent_s: float | None = None
    """Seconds since the holder's last sign of life (running attempts)."""


async def attempt_holder(conn: asyncpg.Connection, job_id: str, attempt: int) -> Holder:
    row = await conn.fetchrow(
        """
        SELECT j.attempt AS current_attempt, j.state, j.lab, j.device_type,
               extract(epoch FROM now() - j.last_progress_at)::float8 AS silent_s,
               a.lab AS attempt_lab, a.attempt AS known_attempt
          FROM jobs j
          LEFT JOIN job_attempts a ON a.job_id = j.id AND a.attempt = $2
         WHERE j.id = $1
        """,
        job_id, attempt,
    )
    if row is None:
        return Holder(exists=False)
    if row["current_attempt"] == attempt:
        return Holder(exists=True, current=True, state=row["state"], lab=row["lab"],
                      device_type=row["device_type"], silent_s=row["silent_s"])
    if row["known_attempt"] is None or attempt > row["current_attempt"]:
        return Holder(exists=False)
    return Holder(exists=True, current=False, state="done", lab=row["attempt_lab"],
                  device_type=row["device_type"])


async def lab_may_run(conn: asyncpg.Connection, lab: str, device_type: str) -> str | None:
    """None if ``lab`` may take jobs of ``device_type``; else why not."""
    row = await conn.fetchrow(
        "SELECT device_types, revoked_at FROM lab_registrations WHERE name = $1", lab)
    if row is not None:
        if row["revoked_at"] is not None:
            return f"lab {lab!r} was revoked"
        if device_type not in row["device_types"]:
            return f"lab {lab!r} is not registered for device type {device_type!r}"
        return None
    if await conn.fetchval("SELECT EXISTS (SELECT 1 FROM lab_registrations)"):
        return f"unknown lab {lab!r}"
    # An installation without registrations (the local stack, open NATS):
    # the device types a lab announced are its own.
    announced = await conn.fetchval(
        "SELECT EXISTS (SELECT 1 FROM announced_devices WHERE lab = $1 AND device_type = $2)",
        lab, device_type)
    return None if announced else f"lab {lab!r} announced no device of type {device_type!r}"


async def may_start(conn: asyncpg.Connection, job_id: str, attempt: int, lab: str,
                    takeover_after_s: float = TAKEOVER_AFTER_S) -> str | None:
    """None if ``lab`` may start this attempt (hold it from now on); else why not."""
    holder = await attempt_holder(conn, job_id, attempt)
    if not holder.exists:
        return f"unknown job attempt {job_id} #{attempt}"
    if not holder.current or holder.state == "done":
        return None  # an old or finished attempt: changes nothing, said elsewhere
    if holder.device_type is None:
        return f"job attempt {job_id} #{attempt} has no device type"
    refused = await lab_may_run(conn, lab, holder.device_type)
    if refused:
        return refused
    if holder.lab in (None, lab) or holder.state == "queued":
        return None
    if holder.silent_s is not None and holder.silent_s >= takeover_after_s:
        return None  # its holder went silent: JetStream redelivered the job
    return f"job attempt {job_id} #{attempt} is held by lab {holder.lab!r}"


def held_by(holder: Holder, lab: str) -> bool:
    return holder.exists and holder.lab == lab
