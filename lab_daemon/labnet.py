"""openwrt-tests' ``labnet.yaml`` as the lab's inventory, read unchanged.

The file (at the root of the openwrt-tests checkout, beside ``targets/``)::

    labs:
      labgrid-example:              # the lab (openwrt-tests' LG_PROXY host)
        proxy: labgrid-example
        maintainers: ["@someone"]   # or one string
        devices: [openwrt_one, linksys_e8450]
        device_instances:           # several units of one device
          linksys_e8450: [belkin_rt3200_1, belkin_rt3200_2]
        developers: [someone, other]
    developers:
      someone: {sshkey: ssh-ed25519 ...}
    devices:                        # older files only; newer ones keep this in
      openwrt_one:                  # the target file's ``openwrt:`` section
        target: mediatek-filogic
        snapshots_only: true

Each device of the lab is ``targets/<device>.yaml``; its ``openwrt:``
section (or the older ``devices:`` entry) gives ``target: <target>-<subtarget>``,
``profile`` (default: the device name) and ``snapshots_only``. Every instance
(the device itself when it has none) becomes one wrtci device whose labgrid
place is ``<lab>-<instance>``, the name openwrt-tests' coordinator gives it:
with a coordinator configured, the lab acquires that place around each job
and check, so a developer listed here who holds it keeps it (``places.py``).
A ``snapshots_only`` device takes only snapshot jobs.

A file that cannot be used at all (unreadable, malformed, no such lab) is a
:class:`LabnetError`. A device that cannot be used (no target file, nothing
saying its target) is a :class:`DeviceProblem`: it stays out of the pool with
that reason, the other devices work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import yaml

from wrtci.lab_daemon.config import Config, DeviceConfig
from wrtci.lab_daemon.firmware_prep import PrepError, read_openwrt_section
from wrtci.proto.jobqueue import JobQueue
from wrtci.proto.subjects import Priority, PriorityClass

SNAPSHOTS_ONLY = [PriorityClass.SNAPSHOT]


class LabnetError(ValueError):
    """labnet.yaml cannot be used; the message names the file and the cause."""


class DeviceProblem(msgspec.Struct, frozen=True, kw_only=True):
    device: str
    file: str
    reason: str

    def __str__(self) -> str:
        return f"{self.file}: device {self.device}: {self.reason}"


class Inventory(msgspec.Struct, frozen=True, kw_only=True):
    lab: str
    devices: list[DeviceConfig]
    problems: list[DeviceProblem] = []
    maintainers: list[str] = []
    developers: list[str] = []
    """People with hands-on access to the lab's devices (they acquire places by hand)."""


def _names(value: Any, what: str, path: Path) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return list(value)
    raise LabnetError(f"{path}: {what} must be a list of names")


def _mapping(value: Any, what: str, path: Path) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise LabnetError(f"{path}: {what} must be a mapping")
    return value


def _read(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise LabnetError(f"{path}: cannot read labnet file: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise LabnetError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("labs"), dict):
        raise LabnetError(f"{path}: not a labnet file (no 'labs:' mapping)")
    return data


def _split_target(value: str) -> tuple[str, str] | None:
    target, sep, subtarget = value.partition("-")
    return (target, subtarget) if sep and target and subtarget else None


def _device(name: str, lab: str, targets: Path, legacy: dict, path: Path,
            instances: list[str]) -> list[DeviceConfig] | DeviceProblem:
    target_file = targets / f"{name}.yaml"
    entry = legacy.get(name) if isinstance(legacy.get(name), dict) else {}

    def problem(reason: str) -> DeviceProblem:
        return DeviceProblem(device=name, file=str(path), reason=reason)

    if not target_file.is_file():
        if not entry:
            return problem(f"unknown device: no target file {target_file} and no "
                           "'devices:' entry")
        return problem(f"target file {target_file} is missing")
    try:
        section = read_openwrt_section(target_file)
    except PrepError as exc:
        return problem(str(exc))
    target_name = (section.target if section else None) or entry.get("target")
    if not isinstance(target_name, str) or _split_target(target_name) is None:
        return problem(f"{target_file} has no 'openwrt: target: <target>-<subtarget>' "
                       "(and labnet has no 'devices:' entry saying it)")
    target, subtarget = _split_target(target_name)  # type: ignore[misc]
    profile = (section.profile if section else None) or name
    snapshots_only = bool((section.snapshots_only if section else False)
                          or entry.get("snapshots_only"))
    return [DeviceConfig(name=instance, target_file=str(target_file), target=target,
                         subtarget=subtarget, profile=profile, place=f"{lab}-{instance}",
                         job_priorities=list(SNAPSHOTS_ONLY) if snapshots_only else None)
            for instance in instances]


def load_labnet(path: str | Path, lab: str, targets_dir: str | Path | None = None) -> Inventory:
    """The devices of ``lab`` in ``path``; target files in ``targets_dir`` (default
    ``targets/`` beside the file, openwrt-tests' layout)."""
    path = Path(path)
    data = _read(path)
    labs = data["labs"]
    if lab not in labs:
        known = ", ".join(sorted(map(str, labs))) or "none"
        raise LabnetError(f"{path}: unknown lab {lab!r} (the file has: {known})")
    section = _mapping(labs[lab], f"labs: {lab}", path)
    targets = Path(targets_dir) if targets_dir else path.parent / "targets"
    legacy = _mapping(data.get("devices"), "devices", path)
    instances = _mapping(section.get("device_instances"), f"labs: {lab}: device_instances",
                         path)
    devices: list[DeviceConfig] = []
    problems: list[DeviceProblem] = []
    for name in _names(section.get("devices"), f"labs: {lab}: devices", path):
        units = _names(instances.get(name), f"device_instances: {name}", path) or [name]
        made = _device(name, lab, targets, legacy, path, units)
        if isinstance(made, DeviceProblem):
            problems.append(made)
        else:
            devices.extend(made)
    unknown = sorted(set(map(str, instances)) - {d for d in _names(
        section.get("devices"), "devices", path)})
    problems += [DeviceProblem(device=name, file=str(path),
                               reason=f"device_instances names a device lab {lab} does not list")
                 for name in unknown]
    return Inventory(lab=lab, devices=devices, problems=problems,
                     maintainers=_names(section.get("maintainers"), "maintainers", path),
                     developers=_names(section.get("developers"), "developers", path))


def with_labnet(config: Config, path: str | Path, lab: str | None = None,
                targets_dir: str | Path | None = None) -> tuple[Config, Inventory]:
    """``config`` with the devices of its lab (or ``lab``) from labnet.yaml added.

    A device that lab.toml also defines keeps lab.toml's definition (where a
    lab sets env, health_image, stage_dir, ...).
    """
    inventory = load_labnet(path, lab or config.lab.name, targets_dir)
    own = {d.name for d in config.lab.devices}
    devices = list(config.lab.devices) + [d for d in inventory.devices if d.name not in own]
    return (msgspec.structs.replace(config, lab=msgspec.structs.replace(
        config.lab, devices=devices)), inventory)


def job_priorities(device: DeviceConfig) -> tuple[Priority, ...] | None:
    """The priorities a device takes jobs of, highest first (None: all)."""
    if device.job_priorities is None:
        return None
    return tuple(sorted({p.priority for p in device.job_priorities}, reverse=True))


class DeviceQueues:
    """The job queue each device asks: the lab's, or one limited to the device's
    priorities (a ``snapshots_only`` device never fetches a stable job, so it
    never holds one back from another device)."""

    def __init__(self, shared: JobQueue) -> None:
        self.shared = shared
        self._limited: dict[tuple[Priority, ...], JobQueue] = {}

    def for_device(self, device: DeviceConfig) -> JobQueue:
        priorities, shared = job_priorities(device), self.shared
        if priorities is None:
            return shared
        queue = self._limited.get(priorities)
        if queue is None:
            queue = self._limited[priorities] = JobQueue(
                shared.nc, shared.subjects, ack_wait=shared.ack_wait, priorities=priorities,
                max_idle_rate=shared.max_idle_rate, api=shared.api)
        return queue

    def look_again(self) -> None:
        """Every queue asks again now (the lab's NATS connection is back)."""
        for queue in (self.shared, *self._limited.values()):
            queue.look_again()

    async def close(self) -> None:
        for queue in self._limited.values():
            await queue.close()
        self._limited.clear()
