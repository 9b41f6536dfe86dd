"""`wrtci up`: starts everything, stops everything, keeps the data."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import nats
import pytest
from minio import Minio

from tests.helpers import PROJECT_ROOT, run_cli
from wrtci.core.config import load_config
from wrtci.services.api.config import Config as ApiConfig
from wrtci.services.cli.common import CliConfig
from wrtci.services.trigger.service import Config as TriggerConfig


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def _alive(pids: set[int]) -> set[int]:
    alive = set()
    for pid in pids:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            alive.add(pid)
    return alive


def _start_up(state_dir: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "wrtci.services.cli.main", "up", "--state-dir", str(state_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT_ROOT,
        env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
    )
    deadline = time.monotonic() + 120
    output = []
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        output.append(line)
        if "Press Ctrl-C" in line:
            return proc, "".join(output)
    proc.kill()
    pytest.fail("wrtci up did not come up:\n" + "".join(output))


def _stop(proc: subprocess.Popen) -> str:
    children = _descendants(proc.pid)
    assert children, "wrtci up started no processes"
    proc.send_signal(signal.SIGINT)
    rest, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, rest
    deadline = time.monotonic() + 10
    while _alive(children) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(children), f"processes left behind: {_alive(children)}"
    return rest


async def _check_servers(config: CliConfig, marker: str | None) -> str | None:
    nc = await nats.connect(config.nats.url)
    try:
        info = await nc.jetstream().stream_info(config.nats.subjects.events_stream)
        assert info.config.name == config.nats.subjects.events_stream
    finally:
        await nc.close()
    conn = await asyncpg.connect(config.database.dsn)
    try:
        if marker is not None:
            await conn.execute(
                "INSERT INTO labs (name) VALUES ($1)", marker)
        found = await conn.fetchval("SELECT name FROM labs LIMIT 1")
    finally:
        await conn.close()
    storage = config.storage
    client = Minio(storage.endpoint, access_key=storage.access_key,
                   secret_key=storage.secret_key, secure=False)
    assert client.bucket_exists(storage.bucket)
    return found


def _local_token(banner: str, state_dir: Path) -> str:
    """The token `wrtci up` printed, stored 0600 in the state dir."""
    path = state_dir / "api-token"
    token = path.read_text().strip()
    assert f"API token   {token}" in banner and str(path) in banner
    assert token.startswith("wrtci_") and path.stat().st_mode & 0o777 == 0o600
    return token


def _wait_listening(port: int, timeout_s: float = 60.0) -> None:
    """The daemons start after the banner; the trigger's HTTP port opens a moment later."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _upload_with_local_token(state_dir: Path, api_port: int) -> None:
    """`wrtci upload` as the banner says: WRTCI_CONFIG and WRTCI_TOKEN_FILE, nothing else.
    A device type no lab has: recorded, and no device is booted for it."""
    trigger_port = load_config(TriggerConfig, state_dir / "wrtci.toml", environ={}).trigger.web.port
    _wait_listening(trigger_port)
    image = state_dir / "openwrt-ath79-generic-tplink_c7-squashfs-sysupgrade.bin"
    image.write_bytes(os.urandom(4096))
    result = run_cli("upload", str(image), "--device-type", "ath79/generic/tplink_c7",
                     env={"WRTCI_CONFIG": str(state_dir / "wrtci.toml"),
                          "WRTCI_TOKEN_FILE": str(state_dir / "api-token")})
    firmware_line, *_, link = result.stdout.splitlines()
    assert firmware_line.startswith("firmware wrtci:upload:") and "recorded" in firmware_line
    firmware_id = firmware_line.split()[1].rstrip(":")
    assert link == f"http://127.0.0.1:{api_port}/firmware/{firmware_id}"


@pytest.mark.timeout(400)
def test_up_starts_answers_stops_and_keeps_data(traversable_tmp: Path) -> None:
    state_dir = traversable_tmp / "state"

    proc, banner = _start_up(state_dir)
    try:
        config = load_config(CliConfig, state_dir / "wrtci.toml", environ={})
        api_port = load_config(ApiConfig, state_dir / "wrtci.toml", environ={}).api.port
        # kci-dev's settings, ready to paste.
        assert f'dashboard_api = "http://127.0.0.1:{api_port}/dashboard/api/"' in banner
        assert asyncio.run(_check_servers(config, "lab-from-first-run")) == "lab-from-first-run"
        token = _local_token(banner, state_dir)
        _upload_with_local_token(state_dir, api_port)
        storage = config.storage
        Minio(storage.endpoint, access_key=storage.access_key, secret_key=storage.secret_key,
              secure=False).put_object(storage.bucket, "logs/kept.txt",
                                       __import__("io").BytesIO(b"kept"), 4)
    finally:
        _stop(proc)

    proc, banner = _start_up(state_dir)
    try:
        assert _local_token(banner, state_dir) == token  # still valid: the same one
        config = load_config(CliConfig, state_dir / "wrtci.toml", environ={})
        assert asyncio.run(_check_servers(config, None)) == "lab-from-first-run"
        storage = config.storage
        body = Minio(storage.endpoint, access_key=storage.access_key,
                     secret_key=storage.secret_key, secure=False).get_object(
            storage.bucket, "logs/kept.txt").read()
        assert body == b"kept"
    finally:
        _stop(proc)
