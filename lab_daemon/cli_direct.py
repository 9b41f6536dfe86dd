"""``wrtci-lab`` actions taken right here, without the daemon.

``maintenance`` and ``health-check`` when no daemon answers, and ``suite sync``.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import msgspec
from nats.js.errors import KeyNotFoundError

from wrtci.core.config import ConfigError
from wrtci.core.publisher import new_key
from wrtci.core.runtime import EventPublisher, connect_nats
from wrtci.lab_daemon.config import Config, DeviceConfig
from wrtci.lab_daemon.event_ids import fresh_id
from wrtci.lab_daemon.health import run_health_check
from wrtci.lab_daemon.places import place_guard
from wrtci.lab_daemon.suite import Suite
from wrtci.lab_daemon.suite_env import SuiteEnvError
from wrtci.lab_daemon.targets import TargetFileError, load_target_file
from wrtci.proto import events as ev
from wrtci.proto.model import DeviceHealth, DeviceState
from wrtci.proto.records import DeviceRecord, decode_record, encode_record


def _publisher(js, subjects) -> EventPublisher:
    """A one-off key: these events have fresh ids, so nothing repeats across runs to be
    deduplicated (and the work directory's key may not be readable by this user)."""
    return EventPublisher(js, subjects, key=new_key())


async def suite_sync(config: Config) -> int:
    """Build (or reuse) the suite's environment for the checkout as it is now."""
    try:
        env = await Suite(config.lab).sync()
    except SuiteEnvError as exc:
        print(f"wrtci-lab: {exc}", file=sys.stderr)
        return 1
    print(f"suite {config.lab.suite_dir} at {env.revision or '(not a git checkout)'}")
    print(f"  python: {env.python}")
    print(f"  from:   {env.source}")
    return 0


def _device_configs(config: Config, name: str | None) -> list[DeviceConfig]:
    devices = [d for d in config.lab.devices if name is None or d.name == name]
    if not devices:
        raise ConfigError(f"no device {name!r} in {config.lab.name}")
    return devices


async def standalone_maintenance(config: Config, name: str, on: bool) -> int:
    [device] = _device_configs(config, name)
    try:
        features = load_target_file(device.target_file).features
    except TargetFileError:
        features = []  # maintenance is how a device with a broken file is parked
    subjects = config.nats.subjects
    nc = await connect_nats(config.nats, "wrtci-lab-cli", max_reconnect_attempts=0,
                            inbox_prefix=config.nats.subjects.lab_inbox_prefix(config.lab.name))
    try:
        js = nc.jetstream()
        kv = await js.key_value(subjects.devices_bucket)
        key = subjects.device_key(config.lab.name, name)
        try:
            record = decode_record((await kv.get(key)).value or b"", DeviceRecord)
        except (KeyNotFoundError, msgspec.DecodeError):
            record = DeviceRecord(lab=config.lab.name, device=name,
                                  device_type=device.device_type, features=features,
                                  updated_at=dt.datetime.now(dt.UTC))
        switch = "on" if on else "off"
        # Off: the daemon checks the device at start before it takes jobs.
        state = DeviceState.MAINTENANCE if on else DeviceState.IDLE
        record = msgspec.structs.replace(record, state=state,
                                         updated_at=dt.datetime.now(dt.UTC))
        await kv.put(key, encode_record(record))
        await _publisher(js, subjects).publish(ev.DeviceHealthChanged.build(
            ev.DeviceHealthData(lab=config.lab.name, device=name,
                                device_type=device.device_type, health=record.health,
                                state=state, consecutive_failures=record.consecutive_failures,
                                message=f"maintenance {switch} (daemon not running)"),
            source=f"wrtci-lab/{config.lab.name}", subject=name,
            id=fresh_id("device.health", config.lab.name)))
    finally:
        await nc.close()
    print(f"{name}: {state}")
    return 0


async def standalone_health_check(config: Config, name: str | None) -> int:
    status = 0
    subjects = config.nats.subjects
    suite = Suite(config.lab)
    nc = await connect_nats(config.nats, "wrtci-lab-cli", max_reconnect_attempts=0,
                            inbox_prefix=config.nats.subjects.lab_inbox_prefix(config.lab.name))
    try:
        js = nc.jetstream()
        for device in _device_configs(config, name):
            image_name = device.health_image or config.lab.health.image
            image = Path(image_name) if image_name else None
            place = place_guard(config.lab, device)
            if not await place.acquire():
                print(f"{device.name}: health check not run: {place.problem}")
                status = 1
                continue
            try:
                result = await run_health_check(config.lab, device, image, suite)
            finally:
                await place.release()
            passed = result.passed
            print(f"{device.name}: health check {'passed' if passed else 'FAILED'}")
            if not passed:
                print("  " + result.detail.replace("\n", "\n  "))
                status = 1
            await _publisher(js, subjects).publish(ev.DeviceHealthChanged.build(
                ev.DeviceHealthData(
                    lab=config.lab.name, device=device.name, device_type=device.device_type,
                    health=DeviceHealth.HEALTHY if passed else DeviceHealth.WARNING,
                    state=DeviceState.IDLE, check_passed=passed,
                    last_passed_at=dt.datetime.now(dt.UTC) if passed else None,
                    message=f"manual check (daemon not running)\n{result.detail}"[-2000:]),
                source=f"wrtci-lab/{config.lab.name}", subject=device.name,
                id=fresh_id("device.health", config.lab.name)))
    finally:
        await nc.close()
    return status
