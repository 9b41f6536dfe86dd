"""Stable object-storage keys; the database stores these keys, labs compute them."""

from __future__ import annotations

import re
import string

from wrtci.proto.limits import NAME_MAX
from wrtci.proto.tokens import Escaping, TokenError

_SAFE_RE = re.compile(r"[^A-Za-z0-9._-]+")


def _part(value: str) -> str:
    cleaned = _SAFE_RE.sub("_", value).strip(".")
    return cleaned or "_"


def job_log_key(job_id: str, attempt: int, stream: str = "console") -> str:
    """The console log (``stream="console"``) or an artifact of one job attempt."""
    name = "console.log" if stream == "console" else _part(stream)
    return f"jobs/{_part(job_id)}/{attempt}/{name}"


def firmware_object_key(firmware_id: str, image_name: str) -> str:
    """A firmware image wrtci holds itself (uploads, PR artifacts)."""
    return f"firmware/{_part(firmware_id)}/{_part(image_name)}"


# -- health-check logs ------------------------------------------------------------
#
# A health check is not a job, but its console log travels like one: the lab
# streams it on its own LOGS subject with a job id in a reserved namespace
# (``health:<device>:<check id>``; every job id starts with a firmware id,
# ``wrtci:…``, so none is in it). The log writer stores it at
# ``health/<lab>/<device>/<check id>/<file>`` — the lab is the one the subject
# names, so no lab can write another's — and the API serves the same tail at
# ``/api/v1/health-logs/<lab>/<device>/<check id>/<file>``, the ``log_url`` of
# the check's ``device.health`` event.

HEALTH_LOG_PREFIX = "health:"
HEALTH_LOG_PATH = "/api/v1/health-logs/"
_CHECK_ID_RE = re.compile(r"^[A-Za-z0-9-]{1,64}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9._-]{0,99}$")
# Reversible and without "/" or ".": two names never share a key or a path segment.
_NAME_PART = Escaping(string.ascii_letters + string.digits + "_-", "=")


def _file(stream: str) -> str:
    return "console.log" if stream == "console" else _part(stream)


def health_log_id(device: str, check_id: str) -> str:
    """The job id a health check's log chunks carry."""
    if not _CHECK_ID_RE.match(check_id):
        raise ValueError(f"invalid health check id {check_id!r}: want [A-Za-z0-9-]{{1,64}}")
    job_id = f"{HEALTH_LOG_PREFIX}{device}:{check_id}"
    if len(job_id) > NAME_MAX:
        raise ValueError(f"device name too long for a health log id: {device[:50]!r}…")
    return job_id


def parse_health_log_id(job_id: str) -> tuple[str, str] | None:
    """(device, check id) of a health log id; None for a job's id.

    Raises ValueError for an id in the reserved namespace that ``health_log_id``
    did not make.
    """
    if not job_id.startswith(HEALTH_LOG_PREFIX):
        return None
    device, sep, check_id = job_id[len(HEALTH_LOG_PREFIX):].rpartition(":")
    if not sep or not device or not _CHECK_ID_RE.match(check_id):
        raise ValueError(f"malformed health log id {job_id!r}")
    return device, check_id


def _health_tail(lab: str, device: str, check_id: str, stream: str) -> str:
    if not _CHECK_ID_RE.match(check_id):
        raise ValueError(f"invalid health check id {check_id!r}")
    return (f"{_NAME_PART.encode(lab)}/{_NAME_PART.encode(device)}/{check_id}/"
            f"{_file(stream)}")


def health_log_key(lab: str, device: str, check_id: str, stream: str = "console") -> str:
    """Where the log writer stores one stream of a health check's log."""
    return "health/" + _health_tail(lab, device, check_id, stream)


def health_log_path(lab: str, device: str, check_id: str, stream: str = "console") -> str:
    """The API's URL path (no host) of that log: the lab's ``log_url``."""
    return HEALTH_LOG_PATH + _health_tail(lab, device, check_id, stream)


def health_log_of_path(tail: str) -> tuple[str, str, str] | None:
    """(lab, device, object key) of a path after ``HEALTH_LOG_PATH``; None if it is
    not one ``health_log_path`` makes."""
    parts = tail.split("/")
    if len(parts) != 4 or not _CHECK_ID_RE.match(parts[2]) or not _FILE_RE.match(parts[3]):
        return None
    try:
        lab, device = _NAME_PART.decode(parts[0]), _NAME_PART.decode(parts[1])
    except TokenError:
        return None
    if _NAME_PART.encode(lab) != parts[0] or _NAME_PART.encode(device) != parts[1]:
        return None  # one spelling per name
    return lab, device, "health/" + tail
