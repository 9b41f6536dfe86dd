"""``wrtci-lab``: run the lab daemon and talk to it.

    wrtci-lab run --config lab.toml [--labnet labnet.yaml --lab NAME]
    wrtci-lab check --config lab.toml              exit 0/1 (systemd, monitoring)
    wrtci-lab status --config lab.toml
    wrtci-lab health-check [DEVICE] --config lab.toml
    wrtci-lab maintenance on|off DEVICE --config lab.toml
    wrtci-lab suite sync --config lab.toml         build the suite's own environment

``health-check``, ``maintenance`` and ``status`` ask the running daemon over
NATS (a request on the lab's control subject). When no daemon runs,
``maintenance`` writes the device's record in the devices bucket (the daemon
keeps a device in maintenance across restarts) and ``health-check`` runs the
check right here and records its result the same way.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

import msgspec
import nats.errors

from wrtci.core.config import ConfigError, load_config
from wrtci.core.runtime import (
    check_nats,
    connect_nats,
    install_signal_handlers,
    setup_logging,
)
from wrtci.lab_daemon.cli_direct import (
    standalone_health_check,
    standalone_maintenance,
    suite_sync,
)
from wrtci.lab_daemon.config import Config
from wrtci.lab_daemon.daemon import LabDaemon, resolve_paths
from wrtci.lab_daemon.labnet import DeviceProblem, LabnetError, with_labnet
from wrtci.lab_daemon.targets import TargetFileError, load_target_file
from wrtci.proto.control import LabAction, LabControlReply, LabControlRequest

CONFIG_ENV = "WRTCI_LAB_CONFIG"


def load(path: str | None, labnet: str | None = None, labnet_lab: str | None = None) -> Config:
    """lab.toml, with the devices of its labnet.yaml (``--labnet``/``--lab`` or the
    ``labnet`` key); labnet devices that cannot be used are logged at start."""
    if not path:
        raise ConfigError(f"no configuration: pass --config or set ${CONFIG_ENV}")
    config = load_config(Config, path)
    base = Path(path).resolve().parent
    config = resolve_paths(config, base)
    lab = config.lab
    labnet = labnet or (str(base / lab.labnet) if lab.labnet else None)
    if not labnet:
        return config
    targets = str(base / lab.labnet_targets) if lab.labnet_targets else None
    try:
        config, inventory = with_labnet(config, labnet, labnet_lab or lab.labnet_lab, targets)
    except LabnetError as exc:
        raise ConfigError(str(exc)) from exc
    LABNET_PROBLEMS[:] = inventory.problems
    return config


LABNET_PROBLEMS: list[DeviceProblem] = []
"""Devices of labnet.yaml left out by the last ``load`` (reported by run and check)."""


def _report_labnet_problems() -> list[str]:
    for problem in LABNET_PROBLEMS:
        # One bad device must not take the others down: it stays out, with its reason.
        logging.getLogger("wrtci.lab_daemon.labnet").error(
            "device %s disabled: %s", problem.device, problem,
            extra={"device": problem.device, "labnet": problem.file})
    return [str(p) for p in LABNET_PROBLEMS]


async def _run(config: Config) -> int:
    _report_labnet_problems()
    stop = asyncio.Event()
    install_signal_handlers(stop)
    await LabDaemon(config, stop, problems=LABNET_PROBLEMS).run()
    return 0


async def _check(config: Config) -> int:
    problems = _report_labnet_problems()
    for device in config.lab.devices:
        try:
            load_target_file(device.target_file)
        except TargetFileError as exc:
            problems.append(str(exc))
    try:
        await asyncio.wait_for(check_nats(
            config.nats, inbox_prefix=config.nats.subjects.lab_inbox_prefix(config.lab.name)), 30)
    except Exception as exc:  # --check reports any failure
        problems.append(f"NATS: {exc!r}")
    for problem in problems:
        print(f"wrtci-lab: {problem}", file=sys.stderr)
    print("wrtci-lab: ok" if not problems else "wrtci-lab: unhealthy")
    return 1 if problems else 0


async def _request(config: Config, request: LabControlRequest,
                   wait_s: float) -> LabControlReply | None:
    """The running daemon's answer; None when no daemon listens."""
    nc = await connect_nats(config.nats, "wrtci-lab-cli", max_reconnect_attempts=0,
                            inbox_prefix=config.nats.subjects.lab_inbox_prefix(config.lab.name))
    try:
        reply = await nc.request(config.nats.subjects.lab_control(config.lab.name),
                                 msgspec.json.encode(request), timeout=wait_s)
        return msgspec.json.decode(reply.data, type=LabControlReply)
    except nats.errors.NoRespondersError:
        return None
    finally:
        await nc.close()


def _print(reply: LabControlReply) -> None:
    print(reply.message)
    for device in reply.devices:
        check = {True: "passed", False: "FAILED", None: "-"}[device.check_passed]
        print(f"  {device.device}: state={device.state} health={device.health} "
              f"failures={device.consecutive_failures} last check={check}")
        if device.message and device.check_passed is False:
            print("    " + device.message.replace("\n", "\n    "))


async def _control(config: Config, action: LabAction, device: str | None) -> int:
    timeout = config.lab.health.timeout_s + 90 if action is LabAction.HEALTH_CHECK else 10
    reply = await _request(config, LabControlRequest(action=action, device=device), timeout)
    if reply is not None:
        _print(reply)
        if not reply.ok:
            return 1
        if action is LabAction.HEALTH_CHECK:
            return 0 if all(d.check_passed for d in reply.devices) else 1
        return 0
    print(f"no lab daemon answers for lab {config.lab.name}; acting directly", file=sys.stderr)
    if action in (LabAction.MAINTENANCE_ON, LabAction.MAINTENANCE_OFF):
        if device is None:
            print(f"{action.value} needs a device name", file=sys.stderr)
            return 2
        return await standalone_maintenance(config, device, action is LabAction.MAINTENANCE_ON)
    if action is LabAction.HEALTH_CHECK:
        return await standalone_health_check(config, device)
    print("daemon not running")
    return 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="wrtci-lab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", "-c", default=os.environ.get(CONFIG_ENV),
                        help=f"lab TOML file (default ${CONFIG_ENV})")
    # `--config` may also follow the subcommand: `wrtci-lab run --config lab.toml`.
    after = argparse.ArgumentParser(add_help=False)
    after.add_argument("--config", "-c", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True)
    inventory = argparse.ArgumentParser(add_help=False)
    inventory.add_argument("--labnet", help="openwrt-tests' labnet.yaml: its devices join the "
                                            "lab's (also the lab.toml key 'labnet')")
    inventory.add_argument("--lab", dest="labnet_lab",
                           help="the lab's name in labnet.yaml (default: lab.name)")
    sub.add_parser("run", parents=[after, inventory], help="run the lab daemon in the foreground")
    sub.add_parser("check", parents=[after, inventory],
                   help="check target files, labnet.yaml and NATS, exit 0/1")
    sub.add_parser("status", parents=[after], help="the running daemon's devices")
    health = sub.add_parser("health-check", parents=[after],
                            help="boot a device (or all) and check it now")
    health.add_argument("device", nargs="?")
    maintenance = sub.add_parser("maintenance", parents=[after],
                                 help="take a device out of / back into the pool")
    maintenance.add_argument("switch", choices=["on", "off"])
    maintenance.add_argument("device")
    suite = sub.add_parser("suite", parents=[after],
                           help="the test suite's own environment")
    suite.add_argument("suite_command", choices=["sync"],
                       help="sync: build (or reuse) the environment for the checkout now")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        config = load(args.config, getattr(args, "labnet", None),
                      getattr(args, "labnet_lab", None))
    except ConfigError as exc:
        print(f"wrtci-lab: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(config.logging, "lab")
    try:
        if args.command == "run":
            return asyncio.run(_run(config))
        if args.command == "check":
            return asyncio.run(_check(config))
        if args.command == "status":
            return asyncio.run(_control(config, LabAction.STATUS, None))
        if args.command == "suite":
            return asyncio.run(suite_sync(config))
        if args.command == "health-check":
            return asyncio.run(_control(config, LabAction.HEALTH_CHECK, args.device))
        switch = LabAction.MAINTENANCE_ON if args.switch == "on" else LabAction.MAINTENANCE_OFF
        return asyncio.run(_control(config, switch, args.device))
    except ConfigError as exc:
        print(f"wrtci-lab: {exc}", file=sys.stderr)
        return 2
    except (OSError, TimeoutError, nats.errors.Error) as exc:
        print(f"wrtci-lab: {exc!r}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
