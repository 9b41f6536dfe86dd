"""labgrid place locks: the lab acquires a device's place around each job and check.

OpenWrt's labs share devices through labgrid's coordinator: a ``RemotePlace``
can only be used by the user who acquired it, and a developer debugging a
device in the lab acquires it by hand. The daemon uses the ``labgrid-client``
command line, in a subprocess with a timeout, rather than labgrid's Python
client API:

- ``labgrid-client`` is labgrid's stable, documented interface (the same
  commands a lab maintainer types), while ``ClientSession`` is an internal
  class that wants its own event loop and an argparse namespace;
- a hung gRPC call in a subprocess is killed with its process; one in a
  thread could not be stopped;
- a call costs ~0.3 s, and the daemon makes few: one when a job or check
  starts and ends, and an idle device looks at its place every
  ``place_check_s``.

The daemon acquires as ``<host>/wrtci-<lab>`` (``LG_HOSTNAME``/``LG_USERNAME``,
also given to the suite, whose RemotePlace must see the place acquired by its
own user). A distinct user tells the lab's own locks apart from a human's on
the same host, so a lock left by a killed daemon is released at start-up and a
human's lock is never touched (``release-from`` releases only our own).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

import msgspec

from wrtci.lab_daemon.config import DeviceConfig, LabSection

log = logging.getLogger(__name__)

_ACQUIRED = re.compile(r"^\s*acquired: (?P<holder>\S+)\s*$", re.MULTILINE)


class PlaceUnavailable(Exception):
    """The place cannot be acquired now; the device waits, its health is not at stake."""

    def __init__(self, place: str, reason: str, holder: str | None = None) -> None:
        super().__init__(f"place {place}: {reason}")
        self.place = place
        self.holder = holder
        """``host/user`` holding the place, when someone else does."""


class PlaceIdentity(msgspec.Struct, frozen=True):
    host: str
    user: str

    @property
    def name(self) -> str:
        return f"{self.host}/{self.user}"

    def environment(self) -> dict[str, str]:
        """What labgrid reads to name the acquiring user (client and suite alike)."""
        return {"LG_HOSTNAME": self.host, "LG_USERNAME": self.user}


def lab_identity(lab_name: str, user: str | None = None) -> PlaceIdentity:
    host = os.environ.get("LG_HOSTNAME") or socket.gethostname()
    return PlaceIdentity(host=host, user=user or f"wrtci-{lab_name}")


def find_client(python: str | None) -> str:
    """``labgrid-client`` next to the suite's interpreter, else on PATH."""
    for interpreter in (python, sys.executable):
        if interpreter:
            candidate = Path(interpreter).parent / "labgrid-client"
            if os.access(candidate, os.X_OK):
                return str(candidate)
    return shutil.which("labgrid-client") or "labgrid-client"


def parse_holder(show_output: str) -> str | None:
    """``host/user`` from ``labgrid-client show``; None when the place is free."""
    match = _ACQUIRED.search(show_output)
    if match is None:
        raise ValueError("no 'acquired:' line in labgrid-client show output")
    holder = match.group("holder")
    return None if holder == "None" else holder


class PlaceClient:
    """One place on one coordinator, driven through ``labgrid-client``."""

    def __init__(self, *, coordinator: str, place: str, identity: PlaceIdentity,
                 client: str, timeout_s: float) -> None:
        self.coordinator = coordinator
        self.place = place
        self.identity = identity
        self.client = client
        self.timeout_s = timeout_s

    async def _run(self, *command: str) -> tuple[int, str]:
        """(exit status, output) of one labgrid-client command; raises on timeout."""
        env = {k: v for k, v in os.environ.items() if k not in ("LG_ENV", "LG_PLACE")}
        env.update(self.identity.environment())
        try:
            proc = await asyncio.create_subprocess_exec(
                self.client, "-x", self.coordinator, "-p", self.place, *command,
                env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT, start_new_session=True)
        except OSError as exc:
            raise PlaceUnavailable(self.place, f"cannot run {self.client}: {exc}") from exc
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), self.timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await asyncio.shield(proc.wait())
            raise
        return proc.returncode or 0, output.decode(errors="replace").strip()

    async def _call(self, *command: str) -> tuple[int, str]:
        try:
            return await self._run(*command)
        except TimeoutError as exc:
            raise PlaceUnavailable(
                self.place, f"labgrid-client {command[0]} got no answer from "
                f"{self.coordinator} within {self.timeout_s:.0f} s") from exc

    async def holder(self) -> str | None:
        """Who holds the place now (``host/user``), None if nobody."""
        status, output = await self._call("show")
        if status != 0:
            raise PlaceUnavailable(self.place, _last_line(output))
        try:
            return parse_holder(output)
        except ValueError as exc:
            raise PlaceUnavailable(self.place, str(exc)) from exc

    async def acquire(self) -> None:
        """Lock the place for the lab; raises PlaceUnavailable (``holder`` set if taken)."""
        status, output = await self._call("acquire")
        if status == 0:
            return
        # Why it failed: labgrid's messages are for humans, the place's state is not.
        holder = await self.holder()
        if holder == self.identity.name:
            return  # ours already (a release that did not get through)
        if holder is not None:
            raise PlaceUnavailable(self.place, f"acquired by {holder}", holder=holder)
        raise PlaceUnavailable(self.place, _last_line(output))

    async def release(self) -> None:
        """Release the place if (and only if) the lab holds it; never a human's lock."""
        status, output = await self._call("release-from", self.identity.name)
        if status != 0 and await self.holder() == self.identity.name:
            # (labgrid-client also fails when the place is not acquired at all: fine)
            raise PlaceUnavailable(self.place, f"release failed: {_last_line(output)}")


def _last_line(output: str) -> str:
    lines = [line for line in output.splitlines() if line.strip()]
    return lines[-1] if lines else "labgrid-client failed without a message"


class PlaceGuard:
    """A device's place as its worker sees it: may it work now, and the lock around work.

    Without a client (no place, or no coordinator) the device is always free.
    A place that someone else holds, or that cannot be reached, makes the
    device wait ``check_s`` before it looks again: not a health failure.
    """

    def __init__(self, client: PlaceClient | None, *, device: str, check_s: float) -> None:
        self.client = client
        self.device = device
        self.check_s = check_s
        self.problem: str | None = None
        """Why the device cannot use its place now (None: it can)."""
        self._blocked_until = 0.0
        self._free_until = 0.0

    def wait_s(self) -> float:
        """How long the device must wait before trying its place again."""
        return max(0.0, self._blocked_until - time.monotonic())

    async def looks_free(self) -> bool:
        """True when nobody else holds the place (checked at most every ``check_s``)."""
        if self.client is None or time.monotonic() < self._free_until:
            return True
        try:
            holder = await self.client.holder()
            if holder is not None and holder != self.client.identity.name:
                raise PlaceUnavailable(self.client.place, f"acquired by {holder}", holder)
        except PlaceUnavailable as exc:
            self._unavailable(exc)
            return False
        self._available()
        return True

    async def acquire(self) -> bool:
        """Lock the place for a job or check; False (and a wait) when that is not possible."""
        if self.client is None:
            return True
        try:
            await self.client.acquire()
        except PlaceUnavailable as exc:
            self._unavailable(exc)
            return False
        self._available()
        log.info("place %s acquired", self.client.place,
                 extra={"device": self.device, "place": self.client.place})
        return True

    async def release(self) -> None:
        """Unlock after the work; a failure is logged (the next acquire finds it ours)."""
        if self.client is None:
            return
        try:
            await self.client.release()
        except PlaceUnavailable as exc:
            log.error("%s", exc, extra={"device": self.device, "place": self.client.place})
            return
        # Humans get their chance between two jobs: look again before the next one.
        self._free_until = 0.0
        log.info("place %s released", self.client.place,
                 extra={"device": self.device, "place": self.client.place})

    def _unavailable(self, exc: PlaceUnavailable) -> None:
        self._blocked_until = time.monotonic() + self.check_s
        self._free_until = 0.0
        if str(exc) != self.problem:
            log.warning("device %s takes no jobs or checks: %s (tried again every %g s)",
                        self.device, exc, self.check_s,
                        extra={"device": self.device, "place": exc.place,
                               "holder": exc.holder or ""})
        self.problem = str(exc)

    def _available(self) -> None:
        self._free_until = time.monotonic() + self.check_s
        self._blocked_until = 0.0
        if self.problem is not None:
            log.info("device %s: its place is usable again", self.device,
                     extra={"device": self.device})
        self.problem = None


def place_guard(lab: LabSection, device: DeviceConfig) -> PlaceGuard:
    """The guard of ``device``'s place; a no-op without a place or a coordinator."""
    client = None
    if device.place and lab.coordinator:
        client = PlaceClient(
            coordinator=lab.coordinator, place=device.place,
            identity=lab_identity(lab.name, lab.labgrid_user),
            client=lab.labgrid_client or find_client(lab.python),
            timeout_s=lab.place_timeout_s)
    return PlaceGuard(client, device=device.name, check_s=lab.place_check_s)
