"""``wrtci up`` restarts a daemon that exits, with backoff, and says so."""

from __future__ import annotations

import asyncio
import io
import sys

from tests.helpers import eventually
from wrtci.core.retry import Backoff
from wrtci.services.stack.up import Stack, supervise


async def test_a_daemon_that_exits_is_restarted_with_backoff(tmp_path) -> None:
    out = io.StringIO()
    stack = Stack(tmp_path / "state", out)
    stack._spawn("flaky", [sys.executable, "-c", "import sys; sys.exit(3)"],
                 tmp_path / "flaky.log")
    stop = asyncio.Event()
    task = asyncio.create_task(supervise(
        stop, stack, backoff=Backoff(steps_s=(0.1, 0.3), jitter=0.0), check_s=0.05))

    async def restarted_twice() -> bool:
        return out.getvalue().count("flaky restarted") >= 2
    try:
        await eventually(restarted_twice, "two restarts")
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        for proc in stack.daemons.values():
            proc.kill()
            proc.wait()
    lines = out.getvalue().splitlines()
    assert lines[0] == "flaky exited with status 3; restarting it in 0 s (restart 1)"
    assert lines[1].startswith("flaky restarted (pid ")
    assert lines[2] == "flaky exited with status 3; restarting it in 0 s (restart 2)"
