"""Requests to a running lab daemon on ``Subjects.lab_control(lab)`` (request/reply).

``wrtci-lab maintenance on|off DEVICE`` and ``wrtci-lab health-check [DEVICE]``
send these; the daemon answers with a :class:`LabControlReply`.
"""

from __future__ import annotations

import enum

import msgspec

from wrtci.proto.model import DeviceHealth, DeviceState


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


class DeviceStatus(msgspec.Struct, frozen=True, kw_only=True):
    device: str
    state: DeviceState
    health: DeviceHealth
    consecutive_failures: int = 0
    check_passed: bool | None = None
    message: str = ""


class LabControlReply(msgspec.Struct, frozen=True, kw_only=True):
    ok: bool
    message: str = ""
    devices: list[DeviceStatus] = []
