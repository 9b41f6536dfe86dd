"""KernelCI's firmware state rules, without a server."""

from __future__ import annotations

import datetime as dt

from wrtci.proto.model import FirmwareState
from wrtci.services.lifecycle import Transition, decide_firmware

NOW = dt.datetime(2026, 11, 25, 12, 0, tzinfo=dt.UTC)
PAST = NOW - dt.timedelta(minutes=1)
FUTURE = NOW + dt.timedelta(minutes=1)


def _decide(state, holdoff=FUTURE, timeout=FUTURE, open_jobs=0):
    return decide_firmware(state, holdoff_until=holdoff, timeout_at=timeout,
                           open_jobs=open_jobs, now=NOW)


def test_available_waits_for_its_holdoff_even_when_all_jobs_are_done():
    assert _decide(FirmwareState.AVAILABLE, holdoff=FUTURE, open_jobs=0) is None


def test_after_holdoff_done_or_closing():
    assert _decide(FirmwareState.AVAILABLE, holdoff=PAST, open_jobs=0) == Transition(
        FirmwareState.DONE, "all jobs done")
    assert _decide(FirmwareState.AVAILABLE, holdoff=PAST, open_jobs=2) == Transition(
        FirmwareState.CLOSING, "holdoff passed")


def test_closing_is_done_with_its_last_job():
    assert _decide(FirmwareState.CLOSING, holdoff=PAST, open_jobs=1) is None
    assert _decide(FirmwareState.CLOSING, holdoff=PAST, open_jobs=0).state is FirmwareState.DONE


def test_timeout_ends_any_open_state_and_done_stays_done():
    for state in (FirmwareState.RUNNING, FirmwareState.AVAILABLE, FirmwareState.CLOSING):
        assert _decide(state, timeout=PAST, open_jobs=3) == Transition(
            FirmwareState.DONE, "timeout")
    assert _decide(FirmwareState.DONE, timeout=PAST) is None


def test_running_waits_for_the_scheduler():
    assert _decide(FirmwareState.RUNNING, holdoff=PAST, open_jobs=0) is None
