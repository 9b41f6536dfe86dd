"""A nats-server running the authorization `wrtci lab add` generates, and its users."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec

from tests import factories
from tests.helpers import eventually
from tests.lab_helpers import (
    FAKE_FIRMWARE,
    lab_subprocess,
    running_log_writer,
    sha256_of,
    write_config,
)
from tests.pipeline import running
from wrtci.core.config import NatsConfig, dump_config
from wrtci.core.runtime import connect_nats
from wrtci.lab_daemon.config import Config
from wrtci.proto.model import Image
from wrtci.services.cli.lab_cmd import LabAdminConfig
from wrtci.services.natsauth import AuthDir, NatsAdminConfig
from wrtci.services.scheduler.service import SchedulerSettings
from wrtci.services.stack.servers import NatsServer

WRTCI = str(Path(sys.executable).parent / "wrtci")
X86 = "x86/64/generic"
OTHER = "ath79/generic/other"
"""The device types of the isolation tests' two labs."""
PLANS = '[[plans]]\nname = "base"\ntests = ["tests/test_fake.py"]\nkeyword = "not hang"\n' \
        'timeout_s = 600\nsources = ["official"]\n'


class SecuredNats:
    """nats-server with the generated auth.conf included, and a site file for the CLI."""

    def __init__(self, root: Path, subjects, database_config, storage_config) -> None:
        self.root = root
        self.subjects = subjects
        self.auth = AuthDir(root / "auth", subjects)
        self.auth.ensure_central_users()
        self.auth.write_conf()
        self.pid_file = root / "nats.pid"
        conf = root / "nats.conf"
        # server_name as NatsServer passes it: a reload must not see it change.
        conf.write_text(f'server_name: "wrtci-local"\npid_file: "{self.pid_file}"\n'
                        'include "auth/auth.conf"\n')
        self.server = NatsServer(root / "nats" / "store", config_file=conf).start()
        self.site = root / "wrtci.toml"
        self.site.write_bytes(dump_config(LabAdminConfig(
            nats=self.user("admin"), database=database_config, storage=storage_config,
            nats_admin=NatsAdminConfig(auth_dir=str(self.auth.path),
                                       pid_file=str(self.pid_file)))))

    def user(self, name: str) -> NatsConfig:
        """The connection settings of a central user or (``lab-<name>``) a lab."""
        return NatsConfig(url=self.server.url, prefix=self.subjects.prefix,
                          creds_file=str(self.auth.creds(name)))

    def connections(self) -> list[str]:
        """Names of the clients connected now (the monitoring endpoint)."""
        with urllib.request.urlopen(f"{self.server.monitor_url}/connz", timeout=5) as reply:
            data = msgspec.json.decode(reply.read())
        return [c.get("name", "") for c in data.get("connections", [])]

    def stop(self) -> None:
        self.server.stop()


async def wrtci(*args: str) -> subprocess.CompletedProcess:
    return await asyncio.to_thread(subprocess.run, [WRTCI, *args], capture_output=True,
                                   text=True, timeout=120)


async def add_lab(secured: SecuredNats, name: str, *device_types: str) -> NatsConfig:
    """`wrtci lab add`, then wait until the reloaded server accepts the new user."""
    argv = ["lab", "add", name, "-c", str(secured.site)]
    for device_type in device_types:
        argv += ["--device-type", device_type]
    result = await wrtci(*argv)
    assert result.returncode == 0, result.stderr
    assert f'name = "{name}"' in result.stdout  # the lab.toml snippet
    config = secured.user(f"lab-{name}")
    for _ in range(20):
        try:
            nc = await asyncio.wait_for(connect_nats(
                config, "probe", max_reconnect_attempts=0,
                inbox_prefix=config.subjects.lab_inbox_prefix(name)), 2)
        except Exception:
            await asyncio.sleep(0.1)
            continue
        await nc.close()
        return config
    raise AssertionError(f"the server never accepted lab {name}")


@contextlib.asynccontextmanager
async def lab_connection(config: NatsConfig, lab: str, errors: list[str]) -> AsyncIterator:
    async def on_error(exc: Exception) -> None:
        errors.append(str(exc).lower())

    nc = await connect_nats(config, f"probe-{lab}", error_cb=on_error,
                            inbox_prefix=config.subjects.lab_inbox_prefix(lab))
    try:
        yield nc
    finally:
        await nc.close()


def fake_firmware(device_type: str, url: str, tag: str):
    """A firmware whose one image is the fake firmware the file server serves."""
    data = factories.firmware([device_type], tag=tag)
    [image] = data.images
    image = msgspec.structs.replace(image, url=url, sha256=sha256_of(FAKE_FIRMWARE),
                                    size=len(FAKE_FIRMWARE))
    assert isinstance(image, Image)
    return msgspec.structs.replace(data, images=[image])


async def publish_firmware(secured: SecuredNats, data) -> None:
    """``data`` announced as the trigger announces it, under the trigger's user."""
    nc = await connect_nats(secured.user("trigger"), "test-trigger")
    try:
        await factories.publish_firmware(nc.jetstream(), secured.subjects, data)
    finally:
        await nc.close()


@contextlib.asynccontextmanager
async def central_services(secured: SecuredNats, root: Path, database_config, storage_config,
                           *, logs: bool = True) -> AsyncIterator[None]:
    """The scheduler (planning ``PLANS``) and the timeout service, and with ``logs`` the
    log writer, each under its generated user."""
    plans = root / "plans.toml"
    plans.write_text(PLANS)
    settings = SchedulerSettings(holdoff_s=0.3, plans_file=str(plans))
    async with contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(running(secured.user("scheduler"), database_config,
                                                storage_config, scheduler=settings))
        if logs:
            await stack.enter_async_context(running_log_writer(
                secured.user("logs"), storage_config, database_config))
        yield


def announced(pool, lab: str):
    """How many devices ``lab`` has announced (a check for ``eventually``)."""
    async def check():
        async with pool.acquire() as conn:
            return await conn.fetchval("SELECT count(*) FROM announced_devices WHERE lab = $1",
                                       lab)
    return check


def stop_process(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@contextlib.asynccontextmanager
async def lab_process(config: Config, root: Path, pool) -> AsyncIterator[Path]:
    """The real wrtci-lab, as a process, from ``root``/NAME.toml (yielded) logging to
    ``root``/NAME.log; once its devices are announced. Stopped (SIGTERM) on exit."""
    name = config.lab.name
    path = write_config(config, root / f"{name}.toml")
    proc = lab_subprocess(path, root / f"{name}.log")
    try:
        await eventually(announced(pool, name), f"{name} registered")
        yield path
    finally:
        await asyncio.to_thread(stop_process, proc)
