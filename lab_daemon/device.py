"""One lab device at run time: its config, target file, state machine and health."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

from wrtci.lab_daemon.config import DeviceConfig, HealthConfig
from wrtci.lab_daemon.firmware_prep import split_image
from wrtci.lab_daemon.places import PlaceGuard
from wrtci.lab_daemon.state import DeviceStateMachine, HealthCounter
from wrtci.lab_daemon.targets import TargetInfo
from wrtci.proto.control import DeviceStatus
from wrtci.proto.events import LabDevice
from wrtci.proto.model import DeviceHealth, DeviceState
from wrtci.proto.records import DeviceRecord


def _trusted(restored: DeviceRecord | None, health: HealthConfig) -> bool:
    """A stored passing check recent enough to stand for this run (check_at_start off)."""
    if health.check_at_start or restored is None or restored.last_check_at is None:
        return False
    age = (dt.datetime.now(dt.UTC) - restored.last_check_at).total_seconds()
    return restored.health is DeviceHealth.HEALTHY and 0 <= age < health.interval_s


class Device:
    def __init__(self, config: DeviceConfig, target: TargetInfo | None, lab: str,
                 health: HealthConfig, restored: DeviceRecord | None = None,
                 place: PlaceGuard | None = None, problem: str | None = None,
                 wanted_image: str | None = None) -> None:
        self.config = config
        self.wanted_image = wanted_image
        """``type[:filesystem]`` the device boots (``firmware_prep.device_image``);
        announced to the scheduler, and jobs of another type are refused."""
        self.place = place or PlaceGuard(None, device=config.name, check_s=0.0)
        self.target = target
        self.problem = problem
        """Why the device cannot be used (e.g. its target file does not load);
        its checks fail with it until it is fixed."""
        self.lab = lab
        self.machine = DeviceStateMachine(config.name)
        trusted = _trusted(restored, health)
        self.health = HealthCounter(health.warn_after, health.disable_after, checked=trusted)
        self.last_check_at: dt.datetime | None = restored.last_check_at if trusted else None
        self.last_check_passed: bool | None = True if trusted else None
        self.last_passed_at: dt.datetime | None = (
            (restored.last_passed_at if restored else None)
            or (self.last_check_at if trusted else None))
        """When the device last passed a check (kept across restarts in its record)."""
        self.message = ""
        # A device an operator took out stays out across daemon restarts.
        if restored is not None and restored.state is DeviceState.MAINTENANCE:
            self.machine.state = DeviceState.MAINTENANCE
            self.health.failures = restored.consecutive_failures
        self.check_due_at = 0.0
        if trusted and self.last_check_at is not None:
            age = (dt.datetime.now(dt.UTC) - self.last_check_at).total_seconds()
            self.check_due_at = time.monotonic() + health.interval_s - age
        self.check_requested = False
        self.maintenance_requested: bool | None = None
        self.wakeup = asyncio.Event()
        self.check_done = asyncio.Condition()
        image = config.health_image or health.image
        self.last_good_image: Path | None = Path(image) if image else None
        self.current_job: str | None = None

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def device_type(self) -> str:
        return self.config.device_type

    @property
    def state(self) -> DeviceState:
        return self.machine.state

    @property
    def features(self) -> list[str]:
        return self.target.features if self.target else []

    @property
    def place_wait_s(self) -> float:
        return self.place.wait_s()

    @property
    def takes_jobs(self) -> bool:
        return self.state is DeviceState.IDLE and self.health.in_pool

    def poke(self) -> None:
        self.wakeup.set()

    def record(self) -> DeviceRecord:
        return DeviceRecord(
            lab=self.lab, device=self.name, device_type=self.device_type,
            features=self.features, state=self.state, health=self.health.health,
            consecutive_failures=self.health.failures, last_check_at=self.last_check_at,
            last_passed_at=self.last_passed_at, updated_at=dt.datetime.now(dt.UTC))

    def summary(self) -> LabDevice:
        image_type, image_filesystem = split_image(self.wanted_image)
        return LabDevice(name=self.name, device_type=self.device_type,
                         features=self.features, state=self.state,
                         health=self.health.health, image_type=image_type,
                         image_filesystem=image_filesystem)

    def status(self) -> DeviceStatus:
        return DeviceStatus(device=self.name, state=self.state, health=self.health.health,
                            consecutive_failures=self.health.failures,
                            check_passed=self.last_check_passed,
                            message=self.place.problem or self.problem or self.message)
