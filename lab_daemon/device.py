"""One lab device at run time: its config, target file, state machine and health."""

from __future__ import annotations

import asyncio
import datetime as dt
import time
from pathlib import Path

from lab_daemon.config import DeviceConfig, HealthConfig
from lab_daemon.places import PlaceGuard
from lab_daemon.state import DeviceStateMachine, HealthCounter
from lab_daemon.targets import TargetInfo
from proto.control import DeviceStatus
from proto.events import LabDevice
from proto.model import DeviceState
from proto.records import DeviceRecord


class Device:
    def __init__(self, config: DeviceConfig, target: TargetInfo, lab: str,
                 health: HealthConfig, restored: DeviceRecord | None = None,
                 place: PlaceGuard | None = None) -> None:
        self.config = config
        self.place = place or PlaceGuard(None, device=config.name, check_s=0.0)
        self.target = target
        self.lab = lab
        self.machine = DeviceStateMachine(config.name)
        self.health = HealthCounter(health.warn_after, health.disable_after,
                                    checked=not health.check_at_start)
        self.last_check_at: dt.datetime | None = None
        self.last_check_passed: bool | None = None
        self.message = ""
        # A device an operator took out stays out across daemon restarts.
        if restored is not None and restored.state is DeviceState.MAINTENANCE:
            self.machine.state = DeviceState.MAINTENANCE
            self.health.failures = restored.consecutive_failures
        self.check_due_at = 0.0 if health.check_at_start else time.monotonic() + health.interval_s
        self.check_requested = False
        self.maintenance_requested: bool | None = None
        self.wakeup = asyncio.Event()
        self.check_done = asyncio.Condition()
        self.last_good_image: Path | None = (Path(config.health_image)
                                             if config.health_image else None)
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
    def takes_jobs(self) -> bool:
        return self.state is DeviceState.IDLE and self.health.in_pool

    def poke(self) -> None:
        self.wakeup.set()

    def record(self) -> DeviceRecord:
        return DeviceRecord(
            lab=self.lab, device=self.name, device_type=self.device_type,
            features=self.target.features, state=self.state, health=self.health.health,
            consecutive_failures=self.health.failures, last_check_at=self.last_check_at,
            updated_at=dt.datetime.now(dt.UTC))

    def summary(self) -> LabDevice:
        return LabDevice(name=self.name, device_type=self.device_type,
                         features=self.target.features, state=self.state,
                         health=self.health.health)

    def status(self) -> DeviceStatus:
        return DeviceStatus(device=self.name, state=self.state, health=self.health.health,
                            consecutive_failures=self.health.failures,
                            check_passed=self.last_check_passed,
                            message=self.place.problem or self.message)
