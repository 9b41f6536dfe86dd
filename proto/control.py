"""Requests to a running lab daemon on ``Subjects.lab_control(lab)`` (request/reply).

``wrtci-lab maintenance on|off DEVICE`` and ``wrtci-lab health-check [DEVICE]``
send these; the daemon answers with a :class:`LabControlReply`.
"""

from __future__ import annotations

import enum

import msgspec

from wrtci.proto.model import DeviceCondition


class LabAction(enum.StrEnum):
    MAINTENANCE_ON = "maintenance_on"
    MAINTENANCE_OFF = "maintenance_off"
    HEALTH_CHECK = "health_check"
    STATUS = "status"


class LabControlRequest(msgspec.Struct, frozen=True, kw_only=True):
    action: LabAction
    device: str | None = None
    """None: every device of the lab (health check, status)."""
    reason: str = ""


class DeviceStatus(DeviceCondition, kw_only=True):
    device: str


class LabControlReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    message: str = ""
    devices: list[DeviceStatus] = []
