"""Every central service: `--check` tells the truth and SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import sys

import pytest

from tests.helpers import PROJECT_ROOT, run_cli
from wrtci.core.config import NatsConfig, dump_config, load_config
from wrtci.services import registry
from wrtci.services.cli.common import CliConfig

SERVICE_NAMES = sorted(registry.SERVICES)


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_check_passes_when_dependencies_answer(name, site_config_file, js) -> None:
    result = run_cli("run", name, "--config", str(site_config_file), "--check", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_check_fails_when_nats_is_unreachable(name, tmp_path, site_config_file) -> None:
    config = load_config(CliConfig, site_config_file, environ={})
    broken = tmp_path / "broken.toml"
    broken.write_bytes(dump_config(CliConfig(
        nats=NatsConfig(url="nats://127.0.0.1:1", prefix=config.nats.prefix,
                        connect_timeout_s=1),
        database=config.database, storage=config.storage)))
    result = run_cli("run", name, "--config", str(broken), "--check", check=False, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "degraded: nats:" in result.stderr


@pytest.mark.parametrize("name", SERVICE_NAMES)
async def test_sigterm_stops_the_service_cleanly(name, site_config_file, js) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wrtci.services.cli.main",
        "run", name, "--config", str(site_config_file),
        stderr=asyncio.subprocess.PIPE, cwd=PROJECT_ROOT,
        env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
    )
    lines: list[bytes] = []
    try:
        while True:
            line = await asyncio.wait_for(proc.stderr.readline(), 30)
            assert line, b"".join(lines).decode()
            lines.append(line)
            if b"service.start" in line:
                break
        # SIGTERM as soon as it has started, whatever it is doing: it stops cleanly.
        proc.send_signal(signal.SIGTERM)
        rest = await asyncio.wait_for(proc.stderr.read(), 60)
        assert await proc.wait() == 0, (b"".join(lines) + rest).decode()
        assert b"service.stop" in rest
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
