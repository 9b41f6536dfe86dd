"""Every central service: `--check` tells the truth and SIGTERM stops it cleanly."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from tests.conftest import new_database_config, new_storage_config
from tests.helpers import PROJECT_ROOT, run_cli
from wrtci.core.config import NatsConfig, dump_config
from wrtci.services import registry
from wrtci.services.cli.common import CliConfig

SERVICE_NAMES = sorted(registry.SERVICES)


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_check_passes_when_dependencies_answer(name, site_config_file, js) -> None:
    result = run_cli("run", name, "--config", str(site_config_file), "--check", check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok" in result.stdout


@pytest.fixture(scope="module")
async def checks_without_nats(tmp_path_factory, postgres_server, template_database,
                              s3_server) -> dict[str, subprocess.CompletedProcess]:
    """`wrtci run NAME --check` of every service, NATS unreachable, the database and
    object storage there: side by side, as each waits out its connect time-out."""
    broken = tmp_path_factory.mktemp("nats-unreachable") / "broken.toml"
    broken.write_bytes(dump_config(CliConfig(
        nats=NatsConfig(url="nats://127.0.0.1:1", connect_timeout_s=1),
        database=await new_database_config(postgres_server, template_database),
        storage=new_storage_config(s3_server))))
    results = await asyncio.gather(*(asyncio.to_thread(
        run_cli, "run", name, "--config", str(broken), "--check", check=False, timeout=60)
        for name in SERVICE_NAMES))
    return dict(zip(SERVICE_NAMES, results, strict=True))


@pytest.mark.parametrize("name", SERVICE_NAMES)
def test_check_fails_when_nats_is_unreachable(name, checks_without_nats) -> None:
    result = checks_without_nats[name]
    assert result.returncode == 1, result.stdout + result.stderr
    assert "degraded: nats:" in result.stderr
    assert "no NATS server answers at nats://127.0.0.1:1" in result.stderr  # and why


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
