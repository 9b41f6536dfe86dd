"""Child processes (pytest, health checks) in their own process group.

A timeout or a shutdown kills the whole group — pytest, labgrid and the QEMU
or serial tools they started — not just the direct child. The child also gets
SIGTERM if the lab daemon dies (PR_SET_PDEATHSIG); the rest of the group,
which that signal does not reach, is recorded under ``record_dir`` while it
runs so the next daemon can kill it (``leftovers.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import signal
from pathlib import Path
from typing import BinaryIO

import msgspec

from wrtci.lab_daemon.leftovers import forget_group, record_group

_PR_SET_PDEATHSIG = 1


def _child_setup() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class Outcome(msgspec.Struct, frozen=True):
    returncode: int | None
    timed_out: bool = False


async def run_process(argv: list[str], *, env: dict[str, str], cwd: Path, output: Path,
                      limit_s: float, kill_grace: float = 5.0,
                      record_dir: Path | None = None) -> Outcome:
    """Run ``argv`` with stdout+stderr appended to ``output``; kill the group on timeout.

    Cancelling the caller also kills the group (and re-raises). With
    ``record_dir`` the group is recorded there until it is over.
    """
    with _append(output) as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, env=env, cwd=cwd, stdin=asyncio.subprocess.DEVNULL, stdout=out,
            stderr=asyncio.subprocess.STDOUT, start_new_session=True,
            preexec_fn=_child_setup,
        )
    record = record_group(record_dir, proc.pid, argv) if record_dir is not None else None
    try:
        returncode = await asyncio.wait_for(proc.wait(), limit_s)
        return Outcome(returncode)
    except TimeoutError:
        await kill_group(proc, kill_grace)
        return Outcome(proc.returncode, timed_out=True)
    except asyncio.CancelledError:
        await asyncio.shield(kill_group(proc, kill_grace))
        raise
    finally:
        forget_group(record)


def _append(path: Path) -> BinaryIO:
    return open(path, "ab")


async def kill_group(proc: asyncio.subprocess.Process, grace: float) -> None:
    """SIGTERM the process group, SIGKILL it if it is still there after ``grace``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            await asyncio.wait_for(proc.wait(), grace)
            # The leader is gone; make sure nothing it started lingers.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            return
        except TimeoutError:
            continue
    await proc.wait()
