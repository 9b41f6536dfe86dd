"""Event ids (``Nats-Msg-Id``) that no other lab can take first.

JetStream drops a message whose ``Nats-Msg-Id`` the stream saw within its
dedupe window — whatever subject it came on. Ids anyone can work out
(``job.started:<job>:<attempt>``) would let one lab publish another's id
first, on its own subjects, and JetStream would drop the real event; and two
labs running one attempt (JetStream redelivered it) would share an id, so
the second lab's start would be dropped and it could never take over.

So every id a lab publishes names the lab, and a fixed id (one that must
repeat on a retry, so JetStream drops the repeat) also carries a tag keyed
with a secret only this lab host knows (``<work_dir>/event-ids.key``, made
on first start): the same lab's retries — after a restart too — get the same
id; no other lab can compute it. ``job.started``/``job.finished`` also name
the delivery (``run``): a rerun of the attempt is a new start.

The same key keys the lab's ``Nats-Msg-Id`` (``core/publisher.py``, the
lab's ``EventPublisher`` in ``presence.py``): the header, not only the id, is
what JetStream dedupes by, and a central event's plain id is no longer its
``Nats-Msg-Id`` either.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import uuid
from pathlib import Path

from wrtci.proto.limits import NAME_MAX

KEY_FILE = "event-ids.key"
TAG_CHARS = 16


def load_key(work_dir: str | Path) -> bytes:
    """The lab host's secret (created, readable only by its owner, on first use)."""
    path = Path(work_dir) / KEY_FILE
    try:
        return bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        pass
    except ValueError as exc:
        raise ValueError(f"{path}: not a hex key ({exc}); delete it to make a new one") from exc
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_bytes(32)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made meanwhile (another process): use that one
        return bytes.fromhex(path.read_text().strip())
    with os.fdopen(fd, "w") as out:
        out.write(key.hex() + "\n")
    return key


def fresh_id(kind: str, lab: str) -> str:
    """A new id naming the lab, for an event that never repeats (heartbeats, health)."""
    return f"{kind}:{lab[:200]}:{uuid.uuid4().hex}"


class EventIds:
    def __init__(self, lab: str, key: bytes) -> None:
        self.lab = lab
        self.key = key

    def fixed(self, kind: str, *parts: object) -> str:
        """``<kind>:<lab>:<parts...>:<tag>``, the same every time for the same parts."""
        body = ":".join((kind, self.lab, *map(str, parts)))
        tag = hmac.new(self.key, body.encode(), hashlib.sha256).hexdigest()[:TAG_CHARS]
        event_id = f"{body}:{tag}"
        if len(event_id) > NAME_MAX:  # long job ids: still unique, still keyed
            digest = hashlib.sha256(body.encode()).hexdigest()
            event_id = f"{kind}:{self.lab[:200]}:{digest}:{tag}"
        return event_id

    def fresh(self, kind: str) -> str:
        return fresh_id(kind, self.lab)

    def started(self, job_id: str, attempt: int, run: int) -> str:
        return self.fixed("job.started", job_id, attempt, run)

    def finished(self, job_id: str, attempt: int, run: int) -> str:
        return self.fixed("job.finished", job_id, attempt, run)

    def chunk(self, job_id: str, attempt: int, run: int, stream: str, seq: int) -> str:
        return self.fixed("log", job_id, attempt, run, stream, seq)
