r"""A device's life as an explicit state machine, and its health count.

::

    idle --job--> busy --done--> idle
      |             \--infra failure--> checking
      +--check--> checking --pass--> idle
      |                  \--fail (>= disable_after)--> unhealthy --check--> checking
      +--maintenance on--> maintenance --off--> checking

Only an idle device whose health is healthy or warning takes jobs.
Maintenance requested while a job or check runs takes effect when it ends.
"""

from __future__ import annotations

from proto.model import DeviceHealth, DeviceState

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

    def record(self, passed: bool) -> DeviceHealth:
        self.checked = True
        self.failures = 0 if passed else self.failures + 1
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
        return self.health in (DeviceHealth.HEALTHY, DeviceHealth.WARNING)
