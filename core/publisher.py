"""Publishing CloudEvents under a ``Nats-Msg-Id`` that only their publisher can compute.

JetStream drops a message whose ``Nats-Msg-Id`` its stream saw within the
dedupe window, whatever subject either came on. Central and lab events share
the EVENTS stream (and labs' log chunks the LOGS stream), and event ids are
deterministic (a publisher's retries, after a restart too, must dedupe), so a
``Nats-Msg-Id`` equal to the event id would let a lab publish, on its own
subjects, the id of a central event or of another lab's event before it goes
out, and JetStream would silently drop the real one.

So the ``Nats-Msg-Id`` is a keyed hash of the event's subject and id
(:func:`msg_id`, HMAC-SHA256 truncated to 128 bits, base64url) with a key only
the publishing party has:

- central services share one random key, made once in the central secrets
  bucket (``<prefix>_secrets``, key ``nats-msg-id``) by whichever service needs
  it first (``create``, so concurrent starters agree) and read by every
  replica; the lab permissions name no subject of that bucket;
- a lab uses the key of its host (``lab_daemon/event_ids.py``), kept in its
  work directory, so its retries after a restart still dedupe.

The subject is part of the hash, so a ``Nats-Msg-Id`` a lab sees (on a job
delivery or a ``job.cancelled`` event) is of no use on any other subject: the
scheduler's ``job.created`` goes to JOBS and then to EVENTS under two
different ``Nats-Msg-Id``s. The CloudEvent id itself — what consumers, the
database and people see — is unchanged.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import logging
import secrets
from typing import Any

from nats.js.errors import BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError

from wrtci.proto import topology
from wrtci.proto.events import CloudEvent, encode
from wrtci.proto.routing import event_subject
from wrtci.proto.subjects import Subjects

log = logging.getLogger(__name__)

KEY_BYTES = 32
MSG_ID_BYTES = 16
CENTRAL_KEY = "nats-msg-id"
"""The key's name in the central secrets bucket."""
_DOMAIN = b"wrtci nats-msg-id\0"


class CentralKeyError(Exception):
    """The central key in the secrets bucket is not a key (tampered with, or truncated)."""


def msg_id(key: bytes, subject: str, event_id: str) -> str:
    """The ``Nats-Msg-Id`` of ``event_id`` published on ``subject``, keyed with ``key``."""
    mac = hmac.new(key, _DOMAIN + subject.encode() + b"\0" + event_id.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:MSG_ID_BYTES]).rstrip(b"=").decode()


def new_key() -> bytes:
    return secrets.token_bytes(KEY_BYTES)


def _decode_key(value: bytes | None) -> bytes:
    try:
        key = bytes.fromhex((value or b"").decode())
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != KEY_BYTES:
        raise CentralKeyError(f"the central key ({CENTRAL_KEY} in the secrets bucket) is not "
                        f"{KEY_BYTES} hex-encoded bytes; delete it to have a new one made")
    return key


async def _secrets_kv(js: Any, subjects: Subjects) -> Any:
    try:
        return await js.key_value(subjects.secrets_bucket)
    except BucketNotFoundError:
        pass
    # `wrtci nats apply` makes it; a service started before that (an upgrade)
    # makes it too, with the replicas of the installation's EVENTS stream.
    info = await js.stream_info(subjects.events_stream)
    config = topology.secrets_bucket(subjects, info.config.num_replicas or 1)
    log.warning("the secrets bucket %s was missing: created (run `wrtci nats apply`)",
                config.bucket)
    await topology.ensure_key_value(js, config)
    return await js.key_value(subjects.secrets_bucket)


async def central_key(js: Any, subjects: Subjects) -> bytes:
    """The central services' ``Nats-Msg-Id`` key: read, or made by the first to ask."""
    kv = await _secrets_kv(js, subjects)
    try:
        return _decode_key((await kv.get(CENTRAL_KEY)).value)
    except KeyNotFoundError:
        pass
    try:
        await kv.create(CENTRAL_KEY, new_key().hex().encode())
        log.info("made the central Nats-Msg-Id key")
    except KeyWrongLastSequenceError:  # another service made it meanwhile: take that one
        pass
    return _decode_key((await kv.get(CENTRAL_KEY)).value)


class EventPublisher:
    """Publishes CloudEvents with a keyed ``Nats-Msg-Id`` (see the module docstring).

    ``key``: the publisher's own key (a lab passes its host's). Without one,
    the publisher is central: it reads the central key from the secrets bucket
    before its first publish (a failure there fails that publish, which the
    caller retries like any other).
    """

    def __init__(self, js: Any, subjects: Subjects, timeout: float = 5.0, *,
                 key: bytes | None = None) -> None:
        self.js = js
        self.subjects = subjects
        self.timeout = timeout
        self._key = key
        self._loading = asyncio.Lock()

    async def key(self) -> bytes:
        if self._key is None:
            async with self._loading:
                if self._key is None:
                    self._key = await central_key(self.js, self.subjects)
        return self._key

    async def msg_id(self, subject: str, event_id: str) -> str:
        return msg_id(await self.key(), subject, event_id)

    async def headers(self, subject: str, event_id: str) -> dict[str, str]:
        return {"Nats-Msg-Id": await self.msg_id(subject, event_id)}

    async def publish_payload(self, subject: str, payload: bytes, event_id: str) -> Any:
        """An encoded event (the outbox stages them so)."""
        return await self.js.publish(subject, payload, timeout=self.timeout,
                                     headers=await self.headers(subject, event_id))

    async def publish(self, event: CloudEvent, subject: str | None = None) -> Any:
        subject = subject or event_subject(self.subjects, event)
        return await self.publish_payload(subject, encode(event), event.id)
