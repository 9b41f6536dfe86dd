"""What every daemon shares: logging, the NATS connection, signals, --check."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import ssl
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import nats
from nats.aio.client import Client as NATS

from wrtci.core.config import ConfigError, LoggingConfig, NatsConfig, load_config
from wrtci.core.publisher import EventPublisher as EventPublisher  # its home until now
from wrtci.core.retry import DEFAULT_BACKOFF, Backoff, retry_call, supervise

log = logging.getLogger(__name__)

C = TypeVar("C", bound=msgspec.Struct)
T = TypeVar("T")

_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line; ``extra={...}`` fields become keys (job_id, ...)."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self._encoder = msgspec.json.Encoder()

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": self.service,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _STANDARD_ATTRS and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return self._encoder.encode(entry).decode()


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        base = super().format(record)
        extras = {
            k: v for k, v in vars(record).items()
            if k not in _STANDARD_ATTRS and not k.startswith("_")
        }
        return base + "".join(f" {k}={v}" for k, v in extras.items())


def setup_logging(config: LoggingConfig, service: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if config.format == "json":
        handler.setFormatter(JsonFormatter(service))
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(config.level.upper())
    logging.getLogger("nats").setLevel(max(root.level, logging.WARNING))


def credential_options(config: NatsConfig) -> dict[str, Any]:
    """nats-py options for the configured identity: NKey seed, JWT creds, token or user."""
    options: dict[str, Any] = {}
    if config.creds_file:
        try:
            text = Path(config.creds_file).read_text()
        except OSError as exc:
            raise ConfigError(f"nats.creds_file: cannot read {config.creds_file}: {exc}") from exc
        if "BEGIN NATS USER JWT" in text:
            options["user_credentials"] = config.creds_file
        elif text.strip().startswith("SU"):
            options["nkeys_seed_str"] = text.strip()
        else:
            raise ConfigError(f"nats.creds_file {config.creds_file}: neither an NKey user "
                              "seed (SU...) nor a JWT .creds file")
    if config.token:
        options["token"] = config.token
    if config.user:
        options["user"] = config.user
        options["password"] = config.password
    return options


def tls_options(config: NatsConfig) -> dict[str, Any]:
    """An SSL context when the url says ``tls://`` or a CA / client certificate is set."""
    if not (any(server.startswith("tls://") for server in config.servers)
            or config.tls_ca_file or config.tls_cert_file):
        return {}
    try:
        context = ssl.create_default_context(cafile=config.tls_ca_file)
        if config.tls_cert_file:
            context.load_cert_chain(config.tls_cert_file, config.tls_key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"nats TLS files: {exc}") from exc
    options: dict[str, Any] = {"tls": context}
    if config.tls_hostname:
        options["tls_hostname"] = config.tls_hostname
    return options


async def connect_nats(config: NatsConfig, name: str, **options: Any) -> NATS:
    """Connect with bounded time; reconnects forever once connected.

    ``options`` go to nats-py as they are (a lab passes its ``inbox_prefix``).
    """
    kwargs: dict[str, Any] = {
        "servers": config.servers,
        "name": name,
        "connect_timeout": config.connect_timeout_s,
        "max_reconnect_attempts": -1,
        "reconnect_time_wait": 1,
        "allow_reconnect": True,
    }
    kwargs.update(credential_options(config))
    kwargs.update(tls_options(config))
    kwargs.update(options)

    async def _error(exc: Exception) -> None:
        # Permission violations and refused credentials land here: say who and why.
        log.warning("nats: %s", exc, extra={"service": name})

    kwargs.setdefault("error_cb", _error)
    # A first connection that fails must fail, not retry silently forever.
    return await asyncio.wait_for(nats.connect(**kwargs), config.connect_timeout_s + 5)


def install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


RunFn = Callable[[Any, asyncio.Event], Awaitable[None]]
CheckFn = Callable[[Any], Awaitable[None]]


def daemon_main(
    service: str,
    config_type: type[C],
    run: RunFn,
    check: CheckFn,
    argv: list[str] | None = None,
) -> int:
    """The whole ``__main__`` of a daemon: args, config, logging, signals, run."""
    parser = argparse.ArgumentParser(prog=f"wrtci-{service}", description=f"wrtci {service}")
    parser.add_argument("--config", "-c", help="TOML configuration file")
    parser.add_argument("--check", action="store_true",
                        help="check that the dependencies answer, exit 0/1")
    args = parser.parse_args(argv)
    try:
        config = load_config(config_type, args.config)
    except ConfigError as exc:
        print(f"wrtci {service}: configuration error: {exc}", file=sys.stderr)
        return 2
    setup_logging(getattr(config, "logging", LoggingConfig()), service)
    if args.check:
        return asyncio.run(_check(service, check, config))
    return asyncio.run(_serve(service, run, config))


async def _check(service: str, check: CheckFn, config: Any) -> int:
    try:
        await asyncio.wait_for(check(config), 30)
    except Degraded as exc:  # the daemon keeps running and waits; monitoring is told which
        print(f"{service}: degraded: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # --check reports any other failure as "unhealthy"
        print(f"{service}: unhealthy: {exc!r}", file=sys.stderr)
        return 1
    print(f"{service}: ok")
    return 0


async def _serve(service: str, run: RunFn, config: Any) -> int:
    stop = asyncio.Event()
    install_signal_handlers(stop)
    log.info("starting", extra={"event": "service.start"})
    await run(config, stop)
    log.info("stopped", extra={"event": "service.stop"})
    return 0


class Stopped(Exception):
    """``stop`` was set while the daemon was still waiting for a dependency."""


class Daemon:
    """A daemon's one lifecycle: resources on an AsyncExitStack, loops supervised.

    ``async with Daemon(name, stop) as daemon``: connections opened with
    :meth:`connect_nats` / :meth:`open` wait (with backoff, logged once) for
    a dependency that is away at start, instead of exiting; :meth:`loop`
    starts a long-running task that is restarted with backoff when it raises
    (a database or S3 outage never ends the daemon); :meth:`serve` waits for
    ``stop``. On exit: ``stop`` is set, loops get ``grace_s`` to wind down
    (they watch ``stop``; the rest are cancelled), then the resources close
    in reverse order (NATS drained last-opened-first).
    """

    def __init__(self, name: str, stop: asyncio.Event, *, backoff: Backoff = DEFAULT_BACKOFF,
                 grace_s: float = 30.0, open_attempts: int | None = None) -> None:
        self.open_attempts = open_attempts
        """None: wait for dependencies as long as it takes; 1: a command fails at once."""
        self.name = name
        self.stop = stop
        self.backoff = backoff
        self.grace_s = grace_s
        self.tasks: list[asyncio.Task] = []
        self.exits = contextlib.AsyncExitStack()

    async def __aenter__(self) -> Daemon:
        await self.start()
        return self

    async def __aexit__(self, exc_type, exc, tb) -> bool:
        await self.close()
        return exc_type is Stopped

    async def start(self) -> None:
        await self.exits.__aenter__()

    async def close(self) -> None:
        self.stop.set()
        if self.tasks:
            _, late = await asyncio.wait(self.tasks, timeout=self.grace_s)
            for task in late:
                log.warning("loop %s did not stop in time; cancelled", task.get_name())
                task.cancel()
            await asyncio.gather(*self.tasks, return_exceptions=True)
        await self.exits.aclose()

    async def open(self, what: str, opener: Callable[[], Awaitable[Any]],
                   closer: Callable[[Any], Awaitable[object]] | None = None) -> Any:
        """``await opener()``, retried until it works or ``stop``; ``closer`` runs at exit."""
        try:
            resource = await retry_call(what, opener, stop=self.stop, backoff=self.backoff,
                                        attempts=self.open_attempts)
        except Exception as exc:
            if self.stop.is_set():
                raise Stopped(f"stopped while waiting for {what}") from exc
            raise
        if closer is not None:
            self.exits.push_async_callback(closer, resource)
        return resource

    async def connect_nats(self, config: NatsConfig, **options: Any) -> NATS:
        return await self.open(f"NATS {config.url}",
                               lambda: connect_nats(config, f"wrtci-{self.name}", **options),
                               _drain)

    async def enter(self, context: contextlib.AbstractAsyncContextManager[T]) -> T:
        return await self.exits.enter_async_context(context)

    def loop(self, name: str, fn: Callable[[asyncio.Event], Awaitable[object]]) -> asyncio.Task:
        """Run ``fn(stop)`` as a supervised task until ``stop``."""
        task = asyncio.create_task(supervise(name, fn, self.stop, backoff=self.backoff),
                                   name=name)
        self.tasks.append(task)
        return task

    async def serve(self) -> None:
        """Until ``stop``."""
        await self.stop.wait()


async def _drain(nc: NATS) -> None:
    try:
        await nc.drain()
    except Exception as exc:  # closing anyway; the server may be gone
        log.info("nats drain at exit failed: %r", exc)


class ServiceApp:
    """A daemon's parts, for tests that start and close them one by one.

    ``open(daemon)`` connects through the :class:`Daemon` and starts its
    loops; :func:`run_app` is the daemon's whole life.
    """

    name = "service"

    def __init__(self) -> None:
        self.daemon: Daemon | None = None

    async def open(self, daemon: Daemon) -> None:
        raise NotImplementedError

    async def start(self, stop: asyncio.Event) -> None:
        self.daemon = Daemon(self.name, stop)
        await self.daemon.start()
        try:
            await self.open(self.daemon)
        except BaseException:
            await self.daemon.close()
            raise

    async def close(self) -> None:
        if self.daemon is not None:
            await self.daemon.close()


async def run_app(app: ServiceApp, stop: asyncio.Event) -> None:
    async with Daemon(app.name, stop) as daemon:
        app.daemon = daemon
        await app.open(daemon)
        await daemon.serve()


class Degraded(Exception):
    """Some dependencies do not answer: ``--check`` names each."""

    def __init__(self, failures: dict[str, BaseException]) -> None:
        self.failures = failures
        super().__init__("; ".join(f"{name}: {exc!r}" for name, exc in failures.items()))


async def check_all(timeout_s: float = 10.0, **checks: Awaitable[object]) -> None:
    """Run every named check at once; raise :class:`Degraded` naming those that failed."""
    names = list(checks)
    results = await asyncio.gather(
        *(asyncio.wait_for(check, timeout_s) for check in checks.values()),
        return_exceptions=True)
    failures = {name: result for name, result in zip(names, results, strict=True)
                if isinstance(result, BaseException)}
    if failures:
        raise Degraded(failures)


async def check_nats(config: NatsConfig, **options: Any) -> None:
    """Connect and see that JetStream answers; a server that is away fails in about
    a second, saying why."""
    failures: list[Exception] = []

    async def remember(exc: Exception) -> None:
        failures.append(exc)

    try:
        # nats.py never gives up on a server while max_reconnect_attempts is 0 (it drops
        # a server once its failures exceed a positive limit): 1 is two tries, 1 s apart.
        nc = await connect_nats(config, "wrtci-check", max_reconnect_attempts=1,
                                error_cb=remember, **options)
    except nats.errors.NoServersError as exc:
        raise ConnectionError(f"no NATS server answers at {config.url}: "
                              f"{failures[-1] if failures else exc}") from exc
    try:
        await nc.jetstream().account_info()
    finally:
        await nc.close()
