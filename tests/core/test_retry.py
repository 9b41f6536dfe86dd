"""core.retry and the consume loops' redelivery waits: pure logic, no servers."""

from __future__ import annotations

import asyncio
import logging

import pytest

from wrtci.core.retry import Backoff, retry_call, supervise
from wrtci.proto.topology import SERVICE_BACKOFF
from wrtci.services.consume import Retry

QUICK = Backoff(steps_s=(0.01,), jitter=0)


async def test_a_try_that_hangs_is_cut_at_its_timeout_and_retried() -> None:
    calls = 0

    async def hangs_once() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await asyncio.Event().wait()  # a request lost in a leader election
        return "answered"

    result = await asyncio.wait_for(
        retry_call("a request", hangs_once, stop=asyncio.Event(), backoff=QUICK,
                   timeout_s=0.05), 5)
    assert (result, calls) == ("answered", 2)


async def test_the_outage_is_logged_once_and_its_end_once(caplog) -> None:
    failures = 3

    async def flaky() -> int:
        nonlocal failures
        if failures:
            failures -= 1
            raise ConnectionError("refused")
        return 7

    with caplog.at_level(logging.INFO):
        assert await retry_call("the database", flaky, stop=asyncio.Event(), backoff=QUICK) == 7
    lines = [r.getMessage() for r in caplog.records if "the database" in r.getMessage()]
    assert len(lines) == 2, lines


async def test_attempts_bound_the_retries_and_the_last_error_is_raised() -> None:
    async def refused() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ConnectionError):
        await retry_call("s3", refused, stop=asyncio.Event(), backoff=QUICK, attempts=3)


async def test_supervise_restarts_a_failed_loop_until_stop() -> None:
    stop = asyncio.Event()
    runs = 0

    async def loop(stop: asyncio.Event) -> None:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise RuntimeError("lost the connection")
        stop.set()

    await asyncio.wait_for(supervise("consume", loop, stop, backoff=QUICK), 5)
    assert runs == 3


def test_a_plain_retry_waits_the_same_each_time() -> None:
    wait = Retry("job not started yet", 2.0)
    assert [wait.wait_s(n) for n in (1, 2, 8)] == [2.0, 2.0, 2.0]


def test_a_growing_retry_starts_short_then_follows_the_consumer_backoff() -> None:
    wait = Retry("job not started yet", 2.0, grow=True)
    waits = [wait.wait_s(n) for n in range(1, len(SERVICE_BACKOFF) + 3)]
    assert waits[0] == 2.0
    assert waits[1:len(SERVICE_BACKOFF)] == SERVICE_BACKOFF[1:]
    assert waits[-1] == SERVICE_BACKOFF[-1]  # the last step repeats
    # what max_deliver (8) deliveries wait in all: longer than any failover
    assert sum(waits[:7]) > 15 * 60
