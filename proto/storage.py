"""Stable object-storage keys; the database stores these keys, labs compute them."""

from __future__ import annotations

import re

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
