"""``wrtci up``: the whole system on one machine.

Starts nats-server, PostgreSQL and the S3 server under a state directory,
applies the JetStream topology and the migrations, starts every central
service and the virtual lab, prints where everything is, and on SIGINT /
SIGTERM stops it all in reverse order. A second ``wrtci up`` on the same state
directory reuses its ports, its database, its streams and its objects.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import tomllib
from collections.abc import Awaitable, Callable
from pathlib import Path

import msgspec
import tomli_w
from aiohttp import web
from minio import Minio

from wrtci.core.config import NatsConfig, dump_config
from wrtci.core.retry import Backoff, sleep_or_stop
from wrtci.core.runtime import connect_nats
from wrtci.core.swallow import logged
from wrtci.proto import topology
from wrtci.services import auth, db, registry
from wrtci.services.cli.common import CliConfig
from wrtci.services.config import DatabaseConfig, StorageConfig
from wrtci.services.db.migrate import migrate
from wrtci.services.stack import mirror, s3_snapshot, virtual_lab
from wrtci.services.stack.servers import (
    NatsServer,
    PostgresServer,
    S3Server,
    free_port,
    loopback_url,
)
from wrtci.services.stack.virtual_lab import VirtualFirmware

log = logging.getLogger(__name__)

DATABASE = "wrtci"


class StackPorts(msgspec.Struct, kw_only=True):
    nats: int = 0
    nats_monitor: int = 0
    postgres: int = 0
    s3: int = 0
    mirror: int = 0
    trigger_web: int = 0
    api: int = 0

    def fill(self) -> StackPorts:
        """Pick free ports for the ones not chosen yet (a new state dir, or a new server)."""
        return StackPorts(**{name: getattr(self, name) or free_port()
                             for name in self.__struct_fields__})


# Short holdoff: locally nobody adds late jobs, and the demo should finish promptly.
LOCAL_HOLDOFF_S = 15.0


class Stack:
    """The servers and daemons of one local installation."""

    def __init__(self, state_dir: Path, out=sys.stdout) -> None:
        self.state_dir = state_dir.resolve()
        self.out = out
        self.config_path = self.state_dir / "wrtci.toml"
        self.ports = self._load_or_pick_ports()
        self.nats = NatsServer(self.state_dir / "nats" / "store", self.ports.nats,
                               self.ports.nats_monitor)
        self.postgres = PostgresServer(self.state_dir / "postgres", self.ports.postgres)
        self.s3 = S3Server(self.state_dir / "s3", self.ports.s3)
        self.daemons: dict[str, subprocess.Popen] = {}
        self.commands: dict[str, tuple[list[str], Path, dict[str, str] | None]] = {}
        """How each daemon was started: ``respawn`` starts it again the same way."""
        self.firmware: VirtualFirmware | None = None
        self.token_path = self.state_dir / "api-token"
        self.token: str | None = None
        """The local API token (upload + control), made by ``prepare``."""
        self._mirror: web.AppRunner | None = None

    # -- configuration ----------------------------------------------------------

    def _load_or_pick_ports(self) -> StackPorts:
        ports_file = self.state_dir / "ports.toml"
        known = StackPorts()
        if ports_file.exists():
            known = msgspec.convert(tomllib.loads(ports_file.read_text()), StackPorts)
        ports = known.fill()
        if ports != known:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            ports_file.write_text(tomli_w.dumps(msgspec.to_builtins(ports)))
        return ports

    @property
    def config(self) -> CliConfig:
        return CliConfig(
            nats=NatsConfig(url=self.nats.url),
            database=DatabaseConfig(dsn=self.postgres.dsn(DATABASE)),
            storage=StorageConfig(endpoint=self.s3.endpoint, access_key=self.s3.access_key,
                                  secret_key=self.s3.secret_key, bucket="wrtci"),
        )

    @property
    def mirror_url(self) -> str:
        return loopback_url(self.ports.mirror)

    @property
    def api_url(self) -> str:
        return loopback_url(self.ports.api)

    def _site_sections(self) -> dict:
        """The daemons' own sections for the local site."""
        return {
            "trigger": {
                "official": {"base_url": self.mirror_url, "channels": ["stable"],
                             "interval_s": 60.0},
                "web": {"port": self.ports.trigger_web},
            },
            "scheduler": {"holdoff_s": LOCAL_HOLDOFF_S},
            "api": {"port": self.ports.api},
            "kcidb": {"public_url": self.api_url},
            # No SMTP server or GitHub here: reports stay in the notifier's log
            # until [notifier.mail] / [notifier.github] are pointed at real ones.
            "notifier": {"web_url": self.api_url, "mail": {"enabled": False},
                         "github": {"enabled": False}},
        }

    def _write_config(self) -> None:
        # Secrets of the local emulator only; a real site keeps them in the environment.
        site = tomllib.loads(dump_config(self.config).decode()) | self._site_sections()
        self.config_path.write_text(tomli_w.dumps(site))
        os.chmod(self.config_path, 0o600)

    # -- start / stop -------------------------------------------------------------

    def start_servers(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.nats.start()
        self.postgres.start()
        self.s3.start()
        self._write_config()

    def build_virtual_lab(self) -> None:
        """The virtual device's firmware, published as a release on the local mirror."""
        self.firmware = virtual_lab.build_firmware(self.state_dir / "virtual-lab")
        if self.firmware is not None:
            mirror.write_release(self.state_dir / "mirror", self.firmware)

    async def start_mirror(self) -> None:
        (self.state_dir / "mirror").mkdir(parents=True, exist_ok=True)
        self._mirror = await mirror.serve_mirror(self.state_dir / "mirror", self.ports.mirror)

    async def stop_mirror(self) -> None:
        if self._mirror is not None:
            await self._mirror.cleanup()
            self._mirror = None

    async def prepare(self) -> None:
        """Topology, database, bucket: idempotent, so a restart keeps the data."""
        config = self.config
        nc = await connect_nats(config.nats, "wrtci-up")
        try:
            await topology.apply(nc.jetstream(), config.nats.subjects)
        finally:
            await nc.close()
        admin = await db.connect(DatabaseConfig(dsn=self.postgres.dsn("postgres")))
        try:
            exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", DATABASE)
            if not exists:
                await admin.execute(f'CREATE DATABASE "{DATABASE}"')
        finally:
            await admin.close()
        conn = await db.connect(config.database)
        try:
            await migrate(conn)
            self.token = await local_token(conn, self.token_path)
        finally:
            await conn.close()
        client = self.minio()
        if not client.bucket_exists(config.storage.bucket):
            client.make_bucket(config.storage.bucket)
        s3_snapshot.restore(client, self.state_dir / "s3" / "objects")

    def minio(self) -> Minio:
        return Minio(self.s3.endpoint, access_key=self.s3.access_key,
                     secret_key=self.s3.secret_key, secure=False, region=self.s3.region)

    def start_daemons(self) -> None:
        logs = self.state_dir / "logs"
        logs.mkdir(exist_ok=True)
        for name in registry.SERVICES:
            argv = [sys.executable, "-m", "wrtci.services.cli.main", "run", name,
                    "--config", str(self.config_path)]
            self._spawn(name, argv, logs / f"{name}.log")
        if self.firmware is not None:
            lab_config = virtual_lab.write_lab_config(self.state_dir, self.config.nats,
                                                      self.firmware)
            argv = [sys.executable, "-m", "wrtci.lab_daemon.cli",
                    "run", "--config", str(lab_config)]
            self._spawn("lab", argv, logs / "lab.log")

    def _spawn(self, name: str, argv: list[str], log_path: Path,
               env: dict[str, str] | None = None) -> None:
        self.commands[name] = (argv, log_path, env)
        with open(log_path, "ab") as logfile:
            self.daemons[name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=logfile, stderr=subprocess.STDOUT,
                start_new_session=True, env=env,
            )

    def respawn(self, name: str) -> subprocess.Popen:
        argv, log_path, env = self.commands[name]
        self._spawn(name, argv, log_path, env)
        return self.daemons[name]

    def stop(self) -> None:
        for proc in reversed(list(self.daemons.values())):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for name, proc in self.daemons.items():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop, killing it", name)
                proc.kill()
                proc.wait()
        if self.s3.running:
            with logged("object store snapshot not saved", log):
                s3_snapshot.save(self.minio(), self.state_dir / "s3" / "objects")
        self.s3.stop()
        self.nats.stop()
        self.postgres.stop()

    def describe(self) -> str:
        lines = [
            f"wrtci is up (state in {self.state_dir})",
            f"  NATS        {self.nats.url}   monitor {self.nats.monitor_url}",
            f"  PostgreSQL  {self.postgres.dsn(DATABASE)}",
            f"  S3 (moto)   {self.s3.url}   bucket wrtci",
            f"  mirror      {self.mirror_url}   (OpenWrt downloads layout, scanned by trigger)",
            f"  uploads     {loopback_url(self.ports.trigger_web)}/api/v1/firmware",
            f"  web + API   {self.api_url}/   (results pages; REST under /api/v1)",
            f"  config      {self.config_path}",
            f"  API token   {self.token}",
            f"              (scopes upload, control; stored in {self.token_path})",
        ]
        for name, proc in self.daemons.items():
            log_path = self.state_dir / "logs" / f"{name}.log"
            lines.append(f"  daemon      {name} (pid {proc.pid}, log {log_path})")
        lines += [
            "",
            f"  export WRTCI_CONFIG={self.config_path}",
            f"  export WRTCI_TOKEN_FILE={self.token_path}",
            "  wrtci upload FILE --device-type TARGET/SUBTARGET[/PROFILE]   # test your firmware",
            "  wrtci events --follow          # the event log",
            f"  nats --server {self.nats.url} stream view "
            f"{self.config.nats.subjects.events_stream}",
            "",
            "  kci-dev (KernelCI's client) reads the results with, in its settings TOML:",
            "    default_instance = \"wrtci\"",
            "    [wrtci]",
            f"    dashboard_api = \"{self.api_url}/dashboard/api/\"",
            "  kci-dev results trees --origin wrtci",
        ]
        return "\n".join(lines)


LOCAL_TOKEN_SCOPES = ["upload", "control"]


async def local_token(conn, path: Path) -> str:
    """The state dir's API token: the stored one while it is valid, else a new one.

    The token is in ``path`` (mode 0600) for ``wrtci upload`` and the API's
    retry / cancel; the database keeps only its digest, like any other token.
    """
    token = await asyncio.to_thread(_read_secret, path)
    if token:
        info = await auth.find_token(conn, token)
        now = await conn.fetchval("SELECT now()")
        if info is not None and info.state(now) == "active" and \
                set(LOCAL_TOKEN_SCOPES) <= set(info.scopes):
            return token
    taken = {t.name for t in await auth.list_tokens(conn)}
    name = next(n for n in ("local", *(f"local-{i}" for i in range(2, 10_000)))
                if n not in taken)
    token = await auth.create_token(conn, name, LOCAL_TOKEN_SCOPES)
    await asyncio.to_thread(_write_secret, path, token)
    return token


def _read_secret(path: Path) -> str | None:
    return path.read_text().strip() if path.exists() else None


def _write_secret(path: Path, secret: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secret + "\n")


DemoFn = Callable[[Stack], Awaitable[int]]


RESTART_BACKOFF = Backoff(steps_s=(1.0, 2.0, 5.0, 10.0, 30.0, 60.0), jitter=0.0)
HEALTHY_AFTER_S = 60.0
"""A daemon that ran this long starts again from the first (short) restart delay."""


async def supervise(stop: asyncio.Event, stack: Stack, *, backoff: Backoff = RESTART_BACKOFF,
                    check_s: float = 1.0) -> None:
    """Until ``stop``: restart daemons that exit, with backoff, as systemd's
    ``Restart=on-failure`` would, and say so in the output."""
    restarts: dict[str, int] = {}
    started = {name: time.monotonic() for name in stack.daemons}
    due: dict[str, float] = {}
    while not await sleep_or_stop(stop, check_s):
        now = time.monotonic()
        for name, proc in list(stack.daemons.items()):
            if proc.poll() is None:
                if now - started.get(name, now) >= HEALTHY_AFTER_S:
                    restarts[name] = 0
                continue
            if name not in due:
                restarts[name] = restarts.get(name, 0) + 1
                delay = backoff.delay(restarts[name])
                due[name] = now + delay
                log.error("%s exited with status %s", name, proc.returncode)
                print(f"{name} exited with status {proc.returncode}; restarting it in "
                      f"{delay:.0f} s (restart {restarts[name]})", file=stack.out, flush=True)
            elif now >= due[name]:
                del due[name]
                new = await asyncio.to_thread(stack.respawn, name)
                started[name] = time.monotonic()
                print(f"{name} restarted (pid {new.pid})", file=stack.out, flush=True)


async def run_stack(state_dir: Path, demo: DemoFn | None, once: bool, out=sys.stdout) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    stack = Stack(state_dir, out)
    status = 0
    try:
        await asyncio.to_thread(stack.start_servers)
        await stack.prepare()
        await asyncio.to_thread(stack.build_virtual_lab)
        await stack.start_mirror()
        await asyncio.to_thread(stack.start_daemons)
        print(stack.describe(), file=out, flush=True)
        if demo is not None:
            status = await demo(stack)
        if not once:
            print("\nPress Ctrl-C to stop.", file=out, flush=True)
            await supervise(stop, stack)
    finally:
        print("stopping wrtci ...", file=out, flush=True)
        await asyncio.to_thread(stack.stop)
        await stack.stop_mirror()
        print("stopped", file=out, flush=True)
    return status


__all__ = ["Stack", "run_stack"]
