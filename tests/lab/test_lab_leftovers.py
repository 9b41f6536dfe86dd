"""Nothing outlives a SIGKILLed lab daemon: the next one kills what it left running.

A test run's process group (pytest and what it started, like QEMU) is
recorded in the work directory while it runs; a new daemon on that directory
kills the recorded groups that are provably still the same processes, and
releases the labgrid place the dead daemon held.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import msgspec
import pytest

from tests.helpers import eventually
from tests.lab_helpers import (
    LAB_PLACE_USER,
    fake_job,
    lab_process_with_job,
    running_lab,
    stream_events,
)
from wrtci.lab_daemon.leftovers import (
    GroupRecord,
    group_members,
    is_recorded_group,
    kill_leftover_groups,
    record_group,
)
from wrtci.proto import events as ev
from wrtci.proto.model import JobResult

# Like labgrid starting QEMU: a process in pytest's group that PR_SET_PDEATHSIG
# (which reaches pytest only) does not stop.
LINGERING_TEST = '''
import os, subprocess, sys, time

def test_starts_a_helper_and_sleeps():
    if os.environ.get("FAKE_SPAWN"):
        subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)",
                          os.environ["FAKE_SPAWN"]])
    time.sleep(float(os.environ.get("FAKE_SLEEP", "0")))
'''


def _processes_with(needle: str) -> list[int]:
    """Live processes whose command line contains ``needle`` (zombies have none)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                if needle.encode() in handle.read():
                    found.append(int(entry))
        except OSError:
            continue
    return found


@pytest.fixture
def sleeper():
    """A process group of its own, as run_process starts pytest."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"],
                            start_new_session=True)
    yield proc
    proc.kill()
    proc.wait()


def test_recorded_group_is_killed(tmp_path, sleeper):
    path = record_group(tmp_path, sleeper.pid, ["sleeper"])
    assert path is not None and path.is_file()
    [killed] = kill_leftover_groups(tmp_path)
    assert killed.pgid == sleeper.pid
    assert sleeper.wait(10) == -signal.SIGKILL
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("change", [{"start_time": 1}, {"boot_id": "another-boot"}])
def test_reused_or_stale_record_kills_nothing(tmp_path, sleeper, change):
    path = record_group(tmp_path, sleeper.pid, ["sleeper"])
    assert path is not None
    record = msgspec.json.decode(path.read_bytes(), type=GroupRecord)
    # A pid now owned by another process (other start time), or a record from before a reboot.
    forged = msgspec.structs.replace(record, **change)
    path.write_bytes(msgspec.json.encode(forged))
    assert not is_recorded_group(forged)
    assert kill_leftover_groups(tmp_path) == []
    assert sleeper.poll() is None
    assert list(tmp_path.iterdir()) == []


def test_group_whose_leader_is_gone_is_still_found(tmp_path):
    # The leader starts a child in its group and exits: the child is what lingers.
    leader = subprocess.Popen(
        [sys.executable, "-c",
         "import subprocess, sys; "
         "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(3600)']); "
         "print(p.pid, flush=True); sys.stdin.read()"],
        start_new_session=True, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    child = int(leader.stdout.readline())
    record_group(tmp_path, leader.pid, ["leader"])
    leader.stdin.close()
    leader.wait(10)
    assert [m.pid for m in group_members(leader.pid)] == [child]
    [killed] = kill_leftover_groups(tmp_path)
    assert killed.pgid == leader.pid
    assert group_members(leader.pid) == []


async def test_sigkilled_daemon_leaves_nothing_running_and_the_job_runs_once(
        js, nc, subjects, events, place_lab, fake_suite, fake_firmware_url, tmp_path,
        labgrid_coordinator, labgrid_place):
    (fake_suite / "tests" / "test_linger.py").write_text(LINGERING_TEST)
    marker = f"{fake_suite}/helper-of-the-killed-run"
    spec = fake_job("wrtci:job:leftover", fake_firmware_url, tests=["tests/test_linger.py"])
    work = tmp_path / "work"
    first_config = place_lab(job_ack_wait_s=4,
                             env={"FAKE_SLEEP": "120", "FAKE_SPAWN": marker})
    try:
        async with lab_process_with_job(nc, subjects, first_config, spec,
                                        tmp_path / "lab-1.log") as first:
            [helper] = await eventually(lambda: _processes_with(marker), within_s=60)
            first.send_signal(signal.SIGKILL)
            await asyncio.to_thread(first.wait, 30)
        # What a SIGKILL leaves: the helper keeps running, the place stays locked.
        assert _processes_with(marker) == [helper]
        assert labgrid_coordinator.holder(labgrid_place) == LAB_PLACE_USER

        # A new daemon on the same work directory (no helper this time).
        second_config = place_lab(job_ack_wait_s=4, env={"FAKE_SLEEP": "0"})
        async with running_lab(second_config):
            # Online means cleaned up: the old pytest and its helper are gone.
            assert _processes_with(str(fake_suite)) == []
            await events.wait_for(lambda e: e.of(ev.JobFinished))
            await eventually(lambda: labgrid_coordinator.holder(labgrid_place) is None)
    finally:
        for pid in _processes_with(marker):  # left only when the test failed
            os.kill(pid, signal.SIGKILL)
    [finished] = events.of(ev.JobFinished)
    assert finished.data.result is JobResult.PASS, finished.data
    assert {c.data.run for c in events.of(ev.LogChunk)} == {1, 2}  # redelivered once
    stored = await stream_events(js, subjects.events_stream,
                                 subjects.lab_event("lab1", "job.finished"))
    assert len(stored) == 1
    assert list((work / "procs").iterdir()) == []
