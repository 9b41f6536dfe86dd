"""Deciding what a batch of lab events does to the record.

Pure logic: :class:`BatchPlan` starts from the job attempts the batch refers
to (as locked in the database) and applies the events in stream order,
collecting the rows to write and a verdict per event. ``store.py`` does the
SQL. Rules:

- a lab event must come from its own lab (subject scope == ``data.lab``);
- job events must name an existing attempt; an attempt belongs to the lab
  that started it last (by event time: JetStream hands an attempt whose lab
  stopped acking to another lab), and any other lab's report is rejected;
- ``done`` is final: a duplicate or late started / progress / finished
  changes nothing (first finished wins) — except wrtci's own verdict: the
  timeout service publishes a central ``job.finished`` only when it ended the
  attempt itself, and then the job record ignores the lab's result, so a lab
  result that reached us first yields its result to it (its tests stay);
- a finished that overtakes its started is accepted if no other lab holds
  the attempt; the later started is then ignored;
- once the job record names the holder of the current attempt (the timeout
  service accepted its ``job.started``, ``services.identity``), only that
  lab's events count: a forged started or finished of another lab is rejected.
- a running attempt's stage is the one of the newest ``job.progress`` of the
  lab holding it (stored when it changes, not on every heartbeat).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

import msgspec

from wrtci.proto import events as ev
from wrtci.proto.model import JobResult
from wrtci.proto.subjects import Subjects
from wrtci.services.batch_consume import Delivery, Verdict
from wrtci.services.consume import Reject
from wrtci.services.identity import count_rejection

EXCERPT_MAX = 16384
ANALYSED_RESULTS = (JobResult.FAIL, JobResult.ERROR)
MAX_ATTEMPT = 2**31 - 1
"""Attempt numbers are PostgreSQL integers; a larger one names no attempt."""


def _text(value: str | None) -> str | None:
    """Text PostgreSQL can store: consoles emit NUL bytes, which ``text`` refuses."""
    return value.replace("\x00", "") if value else value


class Attempt(msgspec.Struct, kw_only=True):
    """A job_attempts row plus the job facts a test row needs."""

    job_id: str
    attempt: int
    state: str
    build_id: str
    device_type: str
    lab: str | None = None
    device: str | None = None
    result: str | None = None
    error_code: str | None = None
    error_message: str | None = None
    log_key: str | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None
    holder: str | None = None
    """The lab the job record (the timeout service) says holds this attempt, if
    it is the job's current one (see ``services.identity``): the authority."""
    suite_revision: str | None = None
    stage: str | None = None
    """The lab's last reported stage (job.progress) while the attempt runs."""
    stage_at: dt.datetime | None = None
    """When the attempt entered that stage."""
    changed: bool = False

    @property
    def key(self) -> tuple[str, int]:
        return (self.job_id, self.attempt)


class TestRow(msgspec.Struct, frozen=True, kw_only=True):
    __test__ = False

    id: str
    build_id: str
    path: str
    status: str
    duration: float | None
    log_excerpt: str | None
    comment: str | None
    start_time: dt.datetime | None
    job_id: str
    attempt: int
    device_type: str
    lab: str | None
    device: str | None


class HealthRow(msgspec.Struct, frozen=True, kw_only=True):
    event_id: str
    lab: str
    device: str
    device_type: str
    health: str
    state: str
    check_passed: bool | None
    consecutive_failures: int
    message: str
    at: dt.datetime


class DeviceRow(msgspec.Struct, frozen=True, kw_only=True):
    lab: str
    name: str
    device_type: str
    features: list[str] | None
    """None: keep the features already known (health events do not carry them)."""
    state: str
    health: str
    consecutive_failures: int | None
    at: dt.datetime


class LabRow(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    online: bool | None
    """None: only seen (a device event), online state unchanged."""
    version: str | None
    at: dt.datetime


class WorkRow(msgspec.Struct, frozen=True, kw_only=True):
    kind: str
    job_id: str
    attempt: int
    log_key: str | None = None


def test_id(job_id: str, attempt: int, path: str) -> str:
    return f"{job_id}:{attempt}:{path}"


def job_keys(deliveries: Iterable[Delivery]) -> set[tuple[str, int]]:
    """The attempts a batch refers to (to load and lock them first)."""
    keys = set()
    for delivery in deliveries:
        data = getattr(delivery.event, "data", None)
        if (isinstance(delivery.event, ev.JobStarted | ev.JobProgress | ev.JobFinished)
                and 0 < data.attempt <= MAX_ATTEMPT  # type: ignore[union-attr]
                and "\x00" not in data.job_id):  # type: ignore[union-attr]
            keys.add((data.job_id, data.attempt))  # type: ignore[union-attr]
    return keys


class BatchPlan:
    def __init__(self, subjects: Subjects, attempts: Iterable[Attempt]) -> None:
        self.subjects = subjects
        self.attempts = {a.key: a for a in attempts}
        self.tests: list[TestRow] = []
        self.health: list[HealthRow] = []
        self.devices: list[DeviceRow] = []
        self.labs: list[LabRow] = []
        self.work: list[WorkRow] = []

    # -- entry point ---------------------------------------------------------------

    def apply(self, delivery: Delivery) -> Verdict:
        event = delivery.event
        try:
            lab = self.subjects.lab_of_subject(delivery.meta.subject)
        except ValueError:
            lab = None  # a central subject
        if lab is None:
            if isinstance(event, ev.JobFinished):
                return self._finished(event, None)
            return None  # not ours to record (the consumer filter keeps these out)
        data_lab = getattr(getattr(event, "data", None), "lab", None)
        if data_lab != lab:
            return Reject(f"lab {lab!r} published an event for lab {data_lab!r}")
        match event:
            case ev.JobStarted():
                return self._started(event.data, event.time, start=True)
            case ev.JobProgress():
                verdict = self._started(event.data, event.time, start=False)
                if verdict is None:
                    self._stage(event.data, event.time)
                return verdict
            case ev.JobFinished():
                return self._finished(event, lab)
            case ev.DeviceHealthChanged():
                return self._device_health(event)
            case ev.LabOnline():
                return self._lab_online(event)
            case ev.LabOffline():
                self.labs.append(LabRow(name=lab, online=False, version=None, at=event.time))
                return None
        return None

    # -- jobs -------------------------------------------------------------------------

    def _claim(self, job_id: str, attempt: int, lab: str | None) -> Attempt | Reject:
        if not 0 < attempt <= MAX_ATTEMPT:
            return Reject(f"job {job_id}: attempt number {attempt} out of range")
        row = self.attempts.get((job_id, attempt))
        if row is None:
            return Reject(f"unknown job attempt {job_id} #{attempt}")
        if lab is not None and row.holder is not None:
            if row.holder != lab:
                count_rejection("results", "job")
                return Reject(f"job attempt {job_id} #{attempt} is held by lab "
                              f"{row.holder!r}, not {lab!r}")
            return row
        if lab is not None and row.lab is not None and row.lab != lab:
            return Reject(f"job attempt {job_id} #{attempt} belongs to lab {row.lab!r}, "
                          f"not {lab!r}")
        return row

    def _started(self, data: ev.JobStartedData | ev.JobProgressData,
                 at: dt.datetime, *, start: bool) -> Verdict:
        # A start by another lab is JetStream redelivering the attempt after its
        # lab stopped acking (DESIGN: the job goes back to the queue): the latest
        # start holds the attempt, as in the scheduler's record.
        row = self._claim(data.job_id, data.attempt, None)
        if isinstance(row, Reject):
            return row
        if row.holder is not None and row.holder != data.lab:
            count_rejection("results", "job.started" if start else "job.progress")
            return Reject(f"job attempt {data.job_id} #{data.attempt} is held by lab "
                          f"{row.holder!r}, not {data.lab!r}")
        taken_over = start and row.state == "running" and row.lab != data.lab
        if taken_over and row.started_at is not None and at <= row.started_at:
            return None  # an older start delivered late: the newer one holds it
        if not taken_over:
            row = self._claim(data.job_id, data.attempt, data.lab)
            if isinstance(row, Reject):
                return row
        if row.state == "queued" or taken_over:
            row.state = "running"
            row.lab, row.device = data.lab, _text(data.device)
            row.started_at = at
            if taken_over:  # the new lab runs it from the start
                row.stage = row.stage_at = None
            row.changed = True
        return None

    def _stage(self, data: ev.JobProgressData, at: dt.datetime) -> None:
        """The newest reported stage of a running attempt (by event time)."""
        row = self.attempts[(data.job_id, data.attempt)]
        if row.state != "running" or row.lab != data.lab:
            return  # over, or an older start's lab: its progress is no longer news
        stage = _text(data.stage)
        if stage == row.stage or (row.stage_at is not None and at < row.stage_at):
            return  # a heartbeat of the same stage (no write), or a late redelivery
        row.stage, row.stage_at = stage, at
        row.changed = True

    def _finished(self, event: ev.JobFinished, lab: str | None) -> Verdict:
        data = event.data
        row = self._claim(data.job_id, data.attempt, lab)
        if isinstance(row, Reject):
            return row
        if row.state == "done":
            if lab is None:
                self._central_verdict(row, data)
            return None
        row.state = "done"
        # The lab that held the attempt stays; a finished that overtook its
        # started (or the timeout service's verdict) fills in what it knows.
        row.lab = row.lab or data.lab or None
        row.device = row.device or _text(data.device) or None
        row.result = str(data.result)
        row.error_code = str(data.error_code) if data.error_code else None
        row.error_message = _text(data.error_message)
        row.log_key = _text(data.log_key)
        row.suite_revision = _text(data.suite_revision)
        row.started_at = row.started_at or data.started_at
        row.finished_at = data.finished_at or event.time
        row.changed = True
        self._add_tests(row, data)
        if data.tests:
            self.work.append(WorkRow(kind="history", job_id=row.job_id, attempt=row.attempt))
        if data.result in ANALYSED_RESULTS and row.log_key:
            self.work.append(WorkRow(kind="log", job_id=row.job_id, attempt=row.attempt,
                                     log_key=row.log_key))
        return None

    def _central_verdict(self, row: Attempt, data: ev.JobFinishedData) -> None:
        verdict = (str(data.result), str(data.error_code) if data.error_code else None)
        if (row.result, row.error_code) == verdict:
            return  # a duplicate
        row.result, row.error_code = verdict
        row.error_message = _text(data.error_message)
        row.changed = True

    def _add_tests(self, row: Attempt, data: ev.JobFinishedData) -> None:
        for result in data.tests:
            path = _text(result.path) or ""
            excerpt = _text(result.log_excerpt)
            if excerpt is not None and len(excerpt) > EXCERPT_MAX:
                excerpt = excerpt[-EXCERPT_MAX:]  # the end of a log says why it failed
            self.tests.append(TestRow(
                id=test_id(row.job_id, row.attempt, path),
                build_id=row.build_id, path=path, status=str(result.status),
                duration=result.duration_s, log_excerpt=excerpt,
                comment=_text(result.message), start_time=row.started_at,
                job_id=row.job_id, attempt=row.attempt, device_type=row.device_type,
                lab=row.lab, device=row.device,
            ))

    # -- labs and devices ------------------------------------------------------------

    def _device_health(self, event: ev.DeviceHealthChanged) -> Verdict:
        data = event.data
        self.labs.append(LabRow(name=data.lab, online=None, version=None, at=event.time))
        self.health.append(HealthRow(
            event_id=_text(event.id) or "", lab=data.lab, device=_text(data.device) or "",
            device_type=_text(data.device_type) or "", health=str(data.health),
            state=str(data.state), check_passed=data.check_passed,
            consecutive_failures=data.consecutive_failures, message=_text(data.message) or "",
            at=event.time,
        ))
        self.devices.append(DeviceRow(
            lab=data.lab, name=_text(data.device) or "",
            device_type=_text(data.device_type) or "", features=None,
            state=str(data.state), health=str(data.health),
            consecutive_failures=data.consecutive_failures, at=event.time,
        ))
        return None

    def _lab_online(self, event: ev.LabOnline) -> Verdict:
        data = event.data
        self.labs.append(LabRow(name=data.lab, online=True, version=data.version or None,
                                at=event.time))
        for device in data.devices:
            self.devices.append(DeviceRow(
                lab=data.lab, name=_text(device.name) or "",
                device_type=_text(device.device_type) or "",
                features=[_text(f) or "" for f in device.features], state=str(device.state),
                health=str(device.health), consecutive_failures=None, at=event.time,
            ))
        return None

    # -- results ------------------------------------------------------------------------

    def changed_attempts(self) -> list[Attempt]:
        return [a for a in self.attempts.values() if a.changed]
