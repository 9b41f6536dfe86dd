"""An error a daemon carries on after: logged, one call per block, rate-limited."""

from __future__ import annotations

import asyncio
import logging

import pytest

from wrtci.core import swallow


def test_a_swallowed_error_is_logged_once_per_window_with_the_count_between(caplog):
    logger = logging.getLogger("wrtci.lab_daemon.test_swallow")
    for _ in range(3):
        with swallow.logged("heartbeat failed", logger, device="dut1"):
            raise OSError("NATS away")
    with swallow.logged("heartbeat failed", logger, device="dut2"):  # another device
        raise OSError("NATS away")
    lines = [r for r in caplog.records if r.name == logger.name]
    assert [(r.getMessage(), r.device) for r in lines] == [  # type: ignore[attr-defined]
        ("heartbeat failed: OSError('NATS away')", "dut1"),
        ("heartbeat failed: OSError('NATS away')", "dut2")]
    with swallow.logged("heartbeat failed", logger, every_s=0.0, device="dut1"):
        raise OSError("still away")
    last = [r for r in caplog.records if r.name == logger.name][-1]
    assert last.not_logged_since == 2  # type: ignore[attr-defined]


def test_an_expected_failure_is_logged_at_the_level_asked_and_cancellation_is_not_swallowed(
        caplog):
    logger = logging.getLogger("wrtci.core.test_swallow_level")
    caplog.set_level(logging.DEBUG, logger=logger.name)
    with swallow.logged("unsubscribe at shutdown", logger, level=logging.DEBUG):
        raise ConnectionError("closed")
    [record] = [r for r in caplog.records if r.name == logger.name]
    assert (record.levelno, record.getMessage()) == (
        logging.DEBUG, "unsubscribe at shutdown: ConnectionError('closed')")
    with pytest.raises(asyncio.CancelledError), swallow.logged("a task", logger):
        raise asyncio.CancelledError
