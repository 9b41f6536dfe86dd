"""A LAVA-style health check: boot the device to its shell, run a few commands.

Run as a subprocess by the lab daemon (labgrid is synchronous, and a hung
boot must be killable as a process group)::

    python -m lab_daemon.healthcheck --target FILE [--command CMD ...]

with ``LG_IMAGE`` (the firmware to boot), ``LG_PLACE`` etc. in the
environment. Exit status 0 means healthy; the output is the check's log.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from lab_daemon.config import DeviceConfig, HealthConfig, LabSection
from lab_daemon.process import Outcome, run_process
from lab_daemon.runner import job_environment

PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def check_device(target_file: str, commands: list[str], shell_state: str,
                 off_state: str) -> None:
    """Raise on any failure; print what the device answered."""
    from labgrid import Environment

    env = Environment(target_file)
    target = env.get_target("main")
    if target is None:
        raise RuntimeError(f"{target_file}: no target 'main'")
    strategy = target.get_driver("Strategy")
    try:
        print(f"healthcheck: transition to {shell_state}", flush=True)
        strategy.transition(shell_state)
        shell = target.get_driver("CommandProtocol")
        for command in commands:
            output = shell.run_check(command)
            print(f"healthcheck: $ {command}", flush=True)
            for line in output:
                print(f"  {line}", flush=True)
    finally:
        try:
            strategy.transition(off_state)
        except Exception as exc:  # power off is best effort; report it
            print(f"healthcheck: could not switch the device off: {exc!r}", flush=True)
        target.cleanup()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lab_daemon.healthcheck")
    parser.add_argument("--target", required=True, help="labgrid target file")
    parser.add_argument("--command", action="append", default=[], help="command to run")
    parser.add_argument("--shell-state", default="shell")
    parser.add_argument("--off-state", default="off")
    args = parser.parse_args(argv)
    try:
        check_device(args.target, args.command, args.shell_state, args.off_state)
    except Exception as exc:  # any failure means "unhealthy", with its reason
        print(f"healthcheck: FAILED: {exc!r}", flush=True)
        return 1
    print("healthcheck: OK", flush=True)
    return 0


async def run_health_check(lab: LabSection, health: HealthConfig, device: DeviceConfig,
                           image: Path | None, output: Path) -> tuple[bool, str]:
    """Run the check in a subprocess; returns (passed, last lines of its log)."""
    problem = _prepare(output, image)
    if problem:
        return False, problem
    assert image is not None
    argv = [lab.python or sys.executable, "-m", "lab_daemon.healthcheck",
            f"--target={device.target_file}",
            f"--shell-state={health.shell_state}", f"--off-state={health.off_state}"]
    argv += [f"--command={command}" for command in health.commands]
    env = job_environment(lab, device, image, None)
    # The check runs this package's own module: make sure the child finds it.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [PACKAGE_ROOT, env.get("PYTHONPATH")]))
    outcome: Outcome = await run_process(argv, env=env, cwd=output.parent, output=output,
                                         limit_s=health.timeout_s, record_dir=lab.procs_dir)
    tail = _tail(output)
    if outcome.timed_out:
        return False, f"health check timed out after {health.timeout_s:.0f} s\n{tail}"
    return outcome.returncode == 0, tail


def _prepare(output: Path, image: Path | None) -> str | None:
    """A fresh log file; the reason the check cannot start, if any."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_bytes(b"")
    if image is None or not image.is_file():
        message = (f"no firmware to boot for the health check ({image}); "
                   "set health_image or pass a job first")
        output.write_text(message + "\n")
        return message
    return None


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


if __name__ == "__main__":
    sys.exit(main())
