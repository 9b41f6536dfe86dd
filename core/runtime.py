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

from core.config import ConfigError, LoggingConfig, NatsConfig, load_config
from proto.events import CloudEvent, encode
from proto.routing import event_subject
from proto.subjects import Subjects

log = logging.getLogger(__name__)

C = TypeVar("C", bound=msgspec.Struct)

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
    if not (config.url.startswith("tls://") or config.tls_ca_file or config.tls_cert_file):
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
        "servers": [config.url],
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


class EventPublisher:
    """Publishes CloudEvents with their id as ``Nats-Msg-Id``."""

    def __init__(self, js: Any, subjects: Subjects, timeout: float = 5.0) -> None:
        self.js = js
        self.subjects = subjects
        self.timeout = timeout

    async def publish(self, event: CloudEvent, subject: str | None = None) -> Any:
        return await self.js.publish(
            subject or event_subject(self.subjects, event),
            encode(event),
            timeout=self.timeout,
            headers={"Nats-Msg-Id": event.id},
        )


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
    except Exception as exc:  # --check reports any failure as "unhealthy"
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


async def until_stop_or_failure(tasks: list[asyncio.Task], stop: asyncio.Event) -> None:
    """Run until ``stop`` is set, then let every task wind down (they watch ``stop``).

    If a task dies first, the others are stopped the same way and its error
    is raised: a daemon whose loop died must exit non-zero so that systemd
    restarts it, rather than linger half alive.
    """
    stopper = asyncio.create_task(stop.wait())
    try:
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
    stop.set()
    await asyncio.gather(*tasks, return_exceptions=True)
    for task in done:
        if task is not stopper and not task.cancelled() and task.exception() is not None:
            log.error("daemon task %s died", task.get_name(), exc_info=task.exception())
            raise task.exception()  # type: ignore[misc]


class ServiceApp:
    """A daemon's connections and loops: ``start`` opens them, ``close`` winds them down."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task] = []
        self.nc: NATS | None = None
        self.pool: Any = None
        """The asyncpg pool, for daemons that have a database."""

    async def start(self, stop: asyncio.Event) -> None:
        """Connect and start ``self.tasks``; they must end once ``stop`` is set."""

    async def close(self) -> None:
        await asyncio.gather(*self.tasks, return_exceptions=True)
        if self.nc is not None:
            with contextlib.suppress(Exception):  # closing anyway; the server may be gone
                await self.nc.drain()
        if self.pool is not None:
            await self.pool.close()


async def run_app(app: ServiceApp, stop: asyncio.Event) -> None:
    """A daemon's whole life: start, run until stop (or a loop dies), close."""
    try:
        await app.start(stop)
        await until_stop_or_failure(app.tasks, stop)
    finally:
        stop.set()
        await app.close()


async def check_nats(config: NatsConfig, **options: Any) -> None:
    """Connect and see that JetStream answers."""
    nc = await connect_nats(config, "wrtci-check", max_reconnect_attempts=0, **options)
    try:
        await nc.jetstream().account_info()
    finally:
        await nc.close()
