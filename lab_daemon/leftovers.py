"""Process groups that outlive a killed daemon, found and killed at the next start.

Each test or health-check process runs in its own process group (see
``process.py``). When the daemon is killed with SIGKILL nothing stops that
group: PR_SET_PDEATHSIG reaches pytest only, and QEMU or a serial tool it
started keep the device busy. So every group is recorded in the work
directory while it runs (``procs/<pgid>.json``), and the next daemon kills the
groups its predecessor left.

A process id can be reused; a group is killed only when it is provably the
recorded one:

- same boot (``/proc/sys/kernel/random/boot_id``);
- its leader, if still there, has the recorded start time; and the group
  still has live members. With the leader gone, those members are still its
  descendants: Linux does not hand out a process id while it names a group.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time
from pathlib import Path

import msgspec

log = logging.getLogger(__name__)

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


class GroupRecord(msgspec.Struct, frozen=True):
    pgid: int
    start_time: int
    """The leader's start time in clock ticks after boot (/proc/PID/stat field 22)."""
    boot_id: str
    argv: list[str]


class ProcStat(msgspec.Struct, frozen=True):
    pid: int
    state: str
    pgid: int
    start_time: int


def read_stat(pid: int) -> ProcStat | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = text[text.rfind(")") + 2:].split()
    return ProcStat(pid=pid, state=fields[0], pgid=int(fields[2]), start_time=int(fields[19]))


def boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


def group_members(pgid: int) -> list[ProcStat]:
    """Live (not zombie) processes of group ``pgid``."""
    members = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            stat = read_stat(int(entry))
            if stat is not None and stat.pgid == pgid and stat.state != "Z":
                members.append(stat)
    return members


def record_group(directory: Path, pid: int, argv: list[str]) -> Path | None:
    """Note a just-started group leader; returns the record to remove when it ends."""
    stat = read_stat(pid)
    if stat is None:
        return None  # already gone
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{pid}.json"
    record = GroupRecord(pgid=pid, start_time=stat.start_time, boot_id=boot_id(), argv=argv)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(msgspec.json.encode(record))
    tmp.replace(path)
    return path


def forget_group(path: Path | None) -> None:
    if path is not None:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def is_recorded_group(record: GroupRecord) -> bool:
    """True when group ``record.pgid`` is still the one that was recorded."""
    if record.boot_id != boot_id():
        return False
    leader = read_stat(record.pgid)
    if leader is not None and leader.start_time != record.start_time:
        return False  # the id now names another process (and so no longer our group)
    return bool(group_members(record.pgid))


def kill_leftover_groups(directory: Path, wait_s: float = 5.0) -> list[GroupRecord]:
    """SIGKILL every recorded group that is still the recorded one; clear the records."""
    killed = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            record = msgspec.json.decode(path.read_bytes(), type=GroupRecord)
        except (OSError, msgspec.DecodeError) as exc:
            log.warning("unreadable process record %s removed: %s", path, exc)
            forget_group(path)
            continue
        if is_recorded_group(record):
            log.warning("killing process group %d left by a previous run: %s",
                        record.pgid, " ".join(record.argv)[:300],
                        extra={"pgid": record.pgid})
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(record.pgid, signal.SIGKILL)
            killed.append(record)
        forget_group(path)
    deadline = time.monotonic() + wait_s
    while any(group_members(r.pgid) for r in killed) and time.monotonic() < deadline:
        time.sleep(0.05)
    return killed
