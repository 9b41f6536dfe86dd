"""Where things are on the web pages (the API serves them).

The pages link with these, and the notifier's reports point at the firmware
page, so the address of a page is written once.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode


def path_part(value: str, safe: str = "") -> str:
    """An id as one URL path segment (ids hold ``/`` and ``:``; ``safe``: left as is)."""
    return quote(value, safe=safe)


def firmware_href(firmware_id: str, safe: str = "") -> str:
    return f"/firmware/{path_part(firmware_id, safe)}"


def job_href(job_id: str) -> str:
    return f"/jobs/{path_part(job_id)}"


def device_href(lab: str, device: str) -> str:
    return f"/devices/{path_part(lab)}/{path_part(device)}"


def device_type_href(device_type: str) -> str:
    return f"/device-types/{path_part(device_type)}"


def lab_href(lab: str) -> str:
    return f"/fleet#lab-{path_part(lab)}"


def raw_log_href(job_id: str, attempt: int, stream: str = "console") -> str:
    suffix = "" if stream == "console" else "?" + urlencode({"stream": stream})
    return f"/api/v1/jobs/{path_part(job_id)}/attempts/{attempt}/log{suffix}"


def log_page_href(job_id: str, attempt: int) -> str:
    return f"/jobs/{path_part(job_id)}/attempts/{attempt}/console"
