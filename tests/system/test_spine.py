"""The whole spine, as `wrtci up --demo` runs it: mirror -> trigger -> scheduler ->
lab daemon on the QEMU device -> log writer -> results in PostgreSQL; then
`wrtci pipe-cleaner` against the same running installation."""

from __future__ import annotations

import asyncio
import hashlib
import os
import signal
import sys
from pathlib import Path

import asyncpg
import pytest
from minio import Minio

from tests.helpers import PROJECT_ROOT
from wrtci.core.config import load_config
from wrtci.proto.storage import job_log_key
from wrtci.services.cli.common import CliConfig
from wrtci.services.stack.virtual_lab import DEVICE_NAME, DEVICE_TYPE, LAB_NAME, REVISION, VERSION

FIRMWARE_ID = f"wrtci:official:stable:{VERSION}:{REVISION}"


async def _read_until(stream: asyncio.StreamReader, marker: str, seen: list[str]) -> None:
    while True:
        line = (await stream.readline()).decode()
        if not line:
            raise AssertionError("wrtci up ended early:\n" + "".join(seen))
        seen.append(line)
        if marker in line:
            return


async def _stored_rows(config: CliConfig) -> dict:
    conn = await asyncpg.connect(config.database.dsn)
    try:
        return {
            "checkout": await conn.fetchrow(
                "SELECT state, source_kind, channel, version, revision FROM checkouts "
                "WHERE id = $1", FIRMWARE_ID),
            "builds": await conn.fetch(
                "SELECT target, subtarget, profile, image_type, sha256 FROM builds "
                "WHERE checkout_id = $1", FIRMWARE_ID),
            "jobs": await conn.fetch(
                "SELECT id, device_type, state, result, attempt FROM jobs WHERE checkout_id = $1",
                FIRMWARE_ID),
            "attempts": await conn.fetch(
                "SELECT a.state, a.result, a.lab, a.device, a.log_key FROM job_attempts a "
                "JOIN jobs j ON j.id = a.job_id WHERE j.checkout_id = $1", FIRMWARE_ID),
            "tests": {r["path"]: r["status"] for r in await conn.fetch(
                "SELECT t.path, t.status FROM tests t JOIN jobs j ON j.id = t.job_id "
                "WHERE j.checkout_id = $1", FIRMWARE_ID)},
            "health_checks": await conn.fetchval(
                "SELECT count(*) FROM device_health WHERE device = $1", DEVICE_NAME),
        }
    finally:
        await conn.close()


@pytest.mark.slow
@pytest.mark.timeout(900)
async def test_up_demo_carries_a_release_to_stored_results(traversable_tmp: Path) -> None:
    state_dir = traversable_tmp / "state"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "wrtci.services.cli.main",
        "up", "--demo", "--state-dir", str(state_dir),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=PROJECT_ROOT,
        env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
    )
    output: list[str] = []
    try:
        await asyncio.wait_for(_read_until(proc.stdout, "demo: PASSED", output), 600)
        text = "".join(output)
        assert f"{DEVICE_TYPE}: jobs pass=1" in text, text

        config = load_config(CliConfig, state_dir / "wrtci.toml", environ={})
        rows = await _stored_rows(config)
        assert rows["checkout"]["state"] == "done"
        assert rows["checkout"]["source_kind"] == "official"
        assert (rows["checkout"]["version"], rows["checkout"]["revision"]) == (VERSION, REVISION)
        assert [(b["target"], b["subtarget"], b["profile"]) for b in rows["builds"]] == [
            ("x86", "64", "generic")]
        # published as downloads.openwrt.org publishes x86 images: gzipped, the
        # sha256 of the .gz; the lab decompressed it for QEMU
        [published] = (state_dir / "mirror").rglob("*-ext4-combined.img.gz")
        assert rows["builds"][0]["sha256"] == hashlib.sha256(published.read_bytes()).hexdigest()
        [job] = rows["jobs"]
        assert (job["device_type"], job["state"], job["result"], job["attempt"]) == (
            DEVICE_TYPE, "done", "pass", 1)
        [attempt] = rows["attempts"]
        assert (attempt["lab"], attempt["device"], attempt["result"]) == (
            LAB_NAME, DEVICE_NAME, "pass")
        tests = rows["tests"]
        assert tests["base.test_base.test_firmware_version"] == "PASS", tests
        assert tests["base.test_base.test_shell"] == "PASS"
        # the disk-image device behaves like OpenWrt: ubus, br-lan, SSH
        assert tests["base.test_base.test_ubus_system_board"] == "PASS"
        assert tests["base.test_base.test_lan_bridge"] == "PASS"
        assert tests["base.test_base.test_ssh"] == "PASS"
        # OpenWrt's netstat -p, scp and sysupgrade's backup, as openwrt-tests uses them
        for name in ("test_port_22_open", "test_scp_put_and_get", "test_sysupgrade_backup",
                     "test_sysupgrade_backup_u"):
            assert tests[f"base.test_base.{name}"] == "PASS", tests
        assert "SKIP" in tests.values()  # the `online` test on a device without network
        assert rows["health_checks"] >= 1  # the lab's health check was recorded

        storage = config.storage
        client = Minio(storage.endpoint, access_key=storage.access_key,
                       secret_key=storage.secret_key, secure=False)

        async def stored(key: str) -> str:
            response = await asyncio.to_thread(client.get_object, storage.bucket, key)
            try:
                return response.read().decode(errors="replace")
            finally:
                response.close()
                response.release_conn()

        console = await stored(attempt["log_key"])
        assert REVISION in console  # the booted firmware printed its revision
        lab_log = await stored(job_log_key(job["id"], job["attempt"], "pytest.log"))
        assert f"downloading {published.name}" in lab_log
        assert "wrtci-lab: decompressed to " in lab_log
        assert f"s3://{storage.bucket}/{attempt['log_key']}" in text

        # KernelCI's production check as a command, against the same installation:
        # `wrtci pipe-cleaner` pushes the smoke firmware through and exits 0.
        cleaner = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "wrtci.services.cli.main",
            "pipe-cleaner", "--config", str(state_dir / "wrtci.toml"), "--timeout", "600",
            cwd=PROJECT_ROOT, env=dict(os.environ, PYTHONPATH=str(PROJECT_ROOT)),
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
        cleaned, _ = await asyncio.wait_for(cleaner.communicate(), 700)
        assert cleaner.returncode == 0, cleaned.decode()
        assert "pipe-cleaner: PASSED" in cleaned.decode()
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            rest = await asyncio.wait_for(proc.stdout.read(), 120)
            output.append(rest.decode())
            assert await proc.wait() == 0, "".join(output)
    assert "stopped" in output[-1]
