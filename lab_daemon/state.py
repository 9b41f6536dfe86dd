r"""A device's life as an explicit state machine, and its health count.

::

    idle --job--> busy --done--> idle
      |             \--infra failure--> checking
      +--check--> checking --pass--> idle
      |                  \--fail (>= disable_after)--> unhealthy --check--> checking
      +--maintenance on--> maintenance --off--> checking

Only an idle device whose last check passed takes jobs: a device whose health
is unknown (never checked) or failing (warning, unhealthy) never does.
Maintenance requested while a job or check runs takes effect when it ends.

``next_action(device, now)`` is the device loop's whole decision, pure: the
loop (``loop.py``) only carries it out.
"""

from __future__ import annotations

import enum
from typing import Protocol

import msgspec

from wrtci.proto.model import DeviceHealth, DeviceState

S = DeviceState

TRANSITIONS: dict[DeviceState, frozenset[DeviceState]] = {
    S.IDLE: frozenset({S.BUSY, S.CHECKING, S.MAINTENANCE}),
    S.BUSY: frozenset({S.IDLE, S.CHECKING, S.MAINTENANCE}),
    S.CHECKING: frozenset({S.IDLE, S.UNHEALTHY, S.MAINTENANCE}),
    S.UNHEALTHY: frozenset({S.CHECKING, S.MAINTENANCE}),
    S.MAINTENANCE: frozenset({S.CHECKING}),
}


class InvalidTransition(RuntimeError):
    pass


class DeviceStateMachine:
    def __init__(self, name: str, state: DeviceState = S.IDLE) -> None:
        self.name = name
        self.state = state

    def can(self, new: DeviceState) -> bool:
        return new in TRANSITIONS[self.state]

    def move(self, new: DeviceState) -> DeviceState:
        """Go to ``new``; returns the previous state. Anything not in the table raises."""
        if not self.can(new):
            raise InvalidTransition(f"device {self.name}: {self.state} -> {new} is not allowed")
        previous, self.state = self.state, new
        return previous


class HealthCounter:
    """Consecutive failed checks -> health, with OpenWrt's warn/disable thresholds."""

    def __init__(self, warn_after: int, disable_after: int, failures: int = 0,
                 checked: bool = False) -> None:
        if not 0 < warn_after <= disable_after:
            raise ValueError("want 0 < warn_after <= disable_after")
        self.warn_after = warn_after
        self.disable_after = disable_after
        self.failures = failures
        self.checked = checked

    def record(self, passed: bool, *, fatal: bool = False) -> DeviceHealth:
        """Count a check; ``fatal``: a failure no retry can fix (a broken target
        file, a suite that cannot be installed) takes the device out at once."""
        self.checked = True
        self.failures = 0 if passed else self.failures + 1
        if fatal and not passed:
            self.failures = max(self.failures, self.disable_after)
        return self.health

    @property
    def health(self) -> DeviceHealth:
        if not self.checked:
            return DeviceHealth.UNKNOWN
        if self.failures >= self.disable_after:
            return DeviceHealth.UNHEALTHY
        if self.failures >= self.warn_after:
            return DeviceHealth.WARNING
        return DeviceHealth.HEALTHY

    @property
    def disabled(self) -> bool:
        return self.health is DeviceHealth.UNHEALTHY

    @property
    def in_pool(self) -> bool:
        """Unknown or failing (warning included) health keeps a device out of the pool."""
        return self.health is DeviceHealth.HEALTHY


class Act(enum.StrEnum):
    WAIT = "wait"
    """Nothing to do for ``wait_s`` (or until poked)."""
    CHECK_NOT_RUN = "check_not_run"
    """Someone else holds the place: tell who asked for a check, then wait."""
    MAINTENANCE = "maintenance"
    """Apply the maintenance switch an operator asked for."""
    CHECK = "check"
    TAKE_JOB = "take_job"


class Action(msgspec.Struct, frozen=True):
    act: Act
    wait_s: float = 0.0


class DeviceFacts(Protocol):
    """What ``next_action`` reads of a device (``device.Device`` has it)."""

    @property
    def state(self) -> DeviceState: ...
    @property
    def health(self) -> HealthCounter: ...
    @property
    def check_requested(self) -> bool: ...
    @property
    def maintenance_requested(self) -> bool | None: ...
    @property
    def check_due_at(self) -> float: ...
    @property
    def place_wait_s(self) -> float:
        """Seconds until the labgrid place may be free; 0: free, or no place."""
        ...


IDLE_WAIT_S = 60.0
MAINTENANCE_WAIT_S = 3600.0


def next_action(device: DeviceFacts, now: float) -> Action:
    """What the device loop does next (``now``: the monotonic clock)."""
    # Someone else holds the place: nothing to do but wait (maintenance on needs no place).
    if device.place_wait_s > 0 and device.maintenance_requested is not True:
        act = Act.CHECK_NOT_RUN if device.check_requested else Act.WAIT
        return Action(act, device.place_wait_s)
    if device.maintenance_requested is not None:
        return Action(Act.MAINTENANCE)
    if device.state is S.MAINTENANCE:
        return Action(Act.WAIT, MAINTENANCE_WAIT_S)
    if device.check_requested or now >= device.check_due_at:
        return Action(Act.CHECK)
    until_check = device.check_due_at - now
    if device.state is not S.IDLE or not device.health.in_pool:
        return Action(Act.WAIT, min(IDLE_WAIT_S, max(0.1, until_check))
                      if device.state is not S.UNHEALTHY else until_check)
    return Action(Act.TAKE_JOB)
