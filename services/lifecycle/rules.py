"""The firmware's rules under KernelCI's node life, and the retry delays (pure logic)."""

from __future__ import annotations

import datetime as dt

import msgspec

from wrtci.core.retry import Backoff
from wrtci.proto.model import FirmwareState

INFRA_RETRY = Backoff(steps_s=(60.0, 300.0, 900.0))
"""Default delays before the 2nd, 3rd, 4th attempt after an infrastructure error."""


class Transition(msgspec.Struct, frozen=True):
    state: FirmwareState
    reason: str


def decide_firmware(
    state: FirmwareState,
    *,
    holdoff_until: dt.datetime | None,
    timeout_at: dt.datetime | None,
    open_jobs: int,
    now: dt.datetime,
) -> Transition | None:
    """The firmware's next state under KernelCI's rules, or None to stay."""
    if state is FirmwareState.DONE:
        return None
    if timeout_at is not None and now >= timeout_at:
        return Transition(FirmwareState.DONE, "timeout")
    if state is FirmwareState.AVAILABLE and holdoff_until is not None and now >= holdoff_until:
        if open_jobs == 0:
            return Transition(FirmwareState.DONE, "all jobs done")
        return Transition(FirmwareState.CLOSING, "holdoff passed")
    if state is FirmwareState.CLOSING and open_jobs == 0:
        return Transition(FirmwareState.DONE, "all jobs done")
    return None


def state_event_id(firmware_id: str, state: FirmwareState, round_: int) -> str:
    suffix = f":r{round_}" if round_ else ""
    return f"firmware.state:{firmware_id}:{state.value}{suffix}"
