"""Every NATS subject, stream, consumer and bucket name of wrtci.

Nothing else in the code base formats a subject. All names hang off one
*prefix* (``wrtci`` in production) so that several installations — or every
test — can share one NATS server without seeing each other.

Layout::

    <prefix>.events.<type...>                      central services' events
    <prefix>.lab.<lab>.events.<type...>            a lab's events
    <prefix>.lab.<lab>.logs.<job>                  a lab's console log chunks
    <prefix>.job.<priority>.<device-type>          queued jobs (work queue)
    <prefix>.wake.<priority>.<device-type>         jobs available again (core NATS)

Labs publish only below ``<prefix>.lab.<lab>.>``, which a NATS account
permission can enforce per lab.
"""

from __future__ import annotations

import enum
import hashlib
import re

from wrtci.proto.tokens import decode_key_part, decode_token, encode_key_part, encode_token

_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")


class Priority(enum.IntEnum):
    """Queue priority of a job; a lab asks the highest first."""

    PR = 9
    CUSTOM = 8
    SNAPSHOT = 5
    STABLE = 3
    OLDSTABLE = 2


class PriorityClass(enum.StrEnum):
    """Where a firmware comes from, as far as its urgency goes."""

    PR = "pr"
    CUSTOM = "custom"
    SNAPSHOT = "snapshot"
    STABLE = "stable"
    OLDSTABLE = "oldstable"

    @property
    def priority(self) -> Priority:
        return Priority[self.name]


PRIORITIES_HIGH_FIRST: tuple[Priority, ...] = tuple(sorted(Priority, reverse=True))


class Subjects:
    """Names for one installation, identified by its prefix."""

    def __init__(self, prefix: str = "wrtci") -> None:
        if not _PREFIX_RE.match(prefix):
            raise ValueError(f"invalid subject prefix {prefix!r}: want [a-z][a-z0-9_-]{{0,31}}")
        self.prefix = prefix
        self._upper = upper = prefix.upper().replace("-", "_")
        # Streams and KV buckets: names fixed by the prefix.
        self.events_stream = f"{upper}_EVENTS"
        self.jobs_stream = f"{upper}_JOBS"
        self.logs_stream = f"{upper}_LOGS"
        self.labs_bucket = f"{prefix}_labs"
        self.devices_bucket = f"{prefix}_devices"
        self.control_bucket = f"{prefix}_control"
        self.secrets_bucket = f"{prefix}_secrets"
        """Central services' secrets (the ``Nats-Msg-Id`` key); no lab may read it."""

    def __repr__(self) -> str:
        return f"Subjects({self.prefix!r})"

    def _lab(self, lab: str) -> str:
        """``<prefix>.lab.<lab>``: below it, all a lab publishes (see ``lab_scope``)."""
        return f"{self.prefix}.lab.{encode_token(lab)}"

    # -- events ---------------------------------------------------------------

    def event(self, event_type: str) -> str:
        """Subject of a central event, ``event_type`` like ``firmware.discovered``."""
        return f"{self.prefix}.events.{_check_dotted(event_type)}"

    def lab_event(self, lab: str, event_type: str) -> str:
        return f"{self._lab(lab)}.events.{_check_dotted(event_type)}"

    def event_family(self, family: str) -> str:
        """Every central event of a family, e.g. ``job`` -> ``<prefix>.events.job.>``."""
        return f"{self.prefix}.events.{_check_dotted(family)}.>"

    def all_events(self) -> list[str]:
        """Filter subjects that together match every event."""
        return [f"{self.prefix}.events.>", f"{self.prefix}.lab.*.events.>"]

    def all_lab_events(self, event_type: str) -> str:
        """One event type as published by any lab."""
        return f"{self.prefix}.lab.*.events.{_check_dotted(event_type)}"

    # -- console logs -----------------------------------------------------------

    def log_chunk(self, lab: str, job_id: str) -> str:
        return f"{self._lab(lab)}.logs.{encode_token(job_id)}"

    def all_logs(self) -> str:
        return f"{self.prefix}.lab.*.logs.*"

    def logs_of_job(self, job_id: str) -> str:
        return f"{self.prefix}.lab.*.logs.{encode_token(job_id)}"

    def lab_of_subject(self, subject: str) -> str:
        """The lab a ``<prefix>.lab.<lab>.…`` subject was published under."""
        parts = subject.split(".")
        if len(parts) < 3 or parts[0] != self.prefix or parts[1] != "lab":
            raise ValueError(f"not a lab subject: {subject!r}")
        return decode_token(parts[2])

    def lab_control(self, lab: str) -> str:
        """Requests to a running lab daemon (maintenance, health check); core NATS."""
        return f"{self._lab(lab)}.control"

    def lab_inbox_prefix(self, lab: str) -> str:
        """A lab's own reply inbox prefix (nats-py ``inbox_prefix``).

        Distinct from the default ``_INBOX.<nuid>`` of the central services, so
        a permission ``<this>.>`` lets a lab read its own replies and nobody else's.
        """
        return f"_INBOX_{self._upper}.{encode_token(lab)}"

    def lab_scope(self, lab: str) -> str:
        """Everything one lab may publish (for NATS permissions)."""
        return f"{self._lab(lab)}.>"

    # -- jobs -------------------------------------------------------------------

    def job(self, priority: Priority | int, device_type: str) -> str:
        return self._queue("job", priority, device_type)

    def jobs_of_type(self, device_type: str) -> str:
        """Every priority's job subject of one device type.

        Not a lab's to subscribe to (its credentials forbid it): a lab hears
        :meth:`wakes_of_type` and takes jobs by pull requests on its consumers.
        """
        return f"{self.prefix}.job.*.{encode_token(device_type)}"

    def all_jobs(self) -> str:
        return f"{self.prefix}.job.*.*"

    def job_wake(self, priority: Priority | int, device_type: str) -> str:
        """The wake-up for jobs of this priority and device type on the JOBS stream:
        sent once jobs are queued (``jobwake.wake_labs``), or became available again
        (``wrtci resume``).

        Core NATS only, outside the JOBS stream: what a lab subscribes to.
        """
        return self._queue("wake", priority, device_type)

    def wakes_of_type(self, device_type: str) -> str:
        return f"{self.prefix}.wake.*.{encode_token(device_type)}"

    def _queue(self, kind: str, priority: Priority | int, device_type: str) -> str:
        """``<prefix>.<kind>.<priority>.<device-type>``, read back by ``_parse_queue_subject``."""
        return f"{self.prefix}.{kind}.{int(Priority(priority))}.{encode_token(device_type)}"

    def parse_job(self, subject: str) -> tuple[Priority, str]:
        return self._parse_queue_subject(subject, ("job",))

    def parse_job_or_wake(self, subject: str) -> tuple[Priority, str]:
        """Priority and device type of a job subject or of a wake-up subject."""
        return self._parse_queue_subject(subject, ("job", "wake"))

    def _parse_queue_subject(self, subject: str, kinds: tuple[str, ...]) -> tuple[Priority, str]:
        parts = subject.split(".")
        if len(parts) != 4 or parts[0] != self.prefix or parts[1] not in kinds:
            raise ValueError(f"not a {' or '.join(kinds)} subject: {subject!r}")
        return Priority(int(parts[2])), decode_token(parts[3])

    def job_consumer(self, priority: Priority | int, device_type: str) -> str:
        """Durable pull consumer shared by every lab with this device type.

        Consumer names may not contain ``/`` or ``.``; the readable part is
        squashed and a digest of the exact name keeps it unique.
        """
        readable = re.sub(r"[^A-Za-z0-9_-]+", "_", device_type)[:80]
        digest = hashlib.sha256(device_type.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        return f"job-{int(Priority(priority))}-{readable}-{digest}"

    # -- KV keys ----------------------------------------------------------------

    def lab_key(self, lab: str) -> str:
        return encode_key_part(lab)

    def device_key(self, lab: str, device: str) -> str:
        return f"{encode_key_part(lab)}.{encode_key_part(device)}"

    def parse_device_key(self, key: str) -> tuple[str, str]:
        lab, device = key.split(".")
        return decode_key_part(lab), decode_key_part(device)

    def lab_device_keys(self, lab: str) -> str:
        """KV filter for every device of one lab."""
        return f"{encode_key_part(lab)}.*"


_DOTTED_RE = re.compile(r"^[a-z_]+(\.[a-z_]+)*$")


def _check_dotted(event_type: str) -> str:
    if not _DOTTED_RE.match(event_type):
        raise ValueError(f"invalid event type {event_type!r}")
    return event_type
