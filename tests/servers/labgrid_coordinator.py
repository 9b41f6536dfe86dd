"""labgrid's own gRPC coordinator, run as a local process for the lab daemon tests.

The real ``labgrid-coordinator`` from the labgrid package, bound to a free
loopback port, keeping its state (places.yaml) in a directory of its own.
``client()`` runs ``labgrid-client`` against it as any user, the way a
developer in the lab would (``LG_USERNAME``/``LG_HOSTNAME``).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from wrtci.lab_daemon.places import parse_holder
from wrtci.services.stack.servers import ServerError, find_executable, free_port

LOOPBACK = "127.0.0.1"


class LabgridCoordinator:
    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def address(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self, timeout: float = 30.0) -> LabgridCoordinator:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "coordinator.log", "ab") as log:
            self.proc = subprocess.Popen(
                [find_executable("labgrid-coordinator"), "-l", self.address], cwd=self.root,
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise ServerError(f"labgrid-coordinator exited with {self.proc.returncode}")
            if self.client("places", check=False).returncode == 0:
                return self
            if time.monotonic() > deadline:
                raise ServerError(f"labgrid-coordinator not ready after {timeout:.0f} s")
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self, *args: str, place: str | None = None, user: str = "alice",
               host: str = "devbox", check: bool = True) -> subprocess.CompletedProcess:
        """``labgrid-client -x <this coordinator> [-p PLACE] ARGS`` as ``host/user``."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LG_")}
        env.update(LG_USERNAME=user, LG_HOSTNAME=host)
        argv = [find_executable("labgrid-client"), "-x", self.address]
        if place is not None:
            argv += ["-p", place]
        result = subprocess.run([*argv, *args], env=env, capture_output=True, text=True,
                                timeout=30)
        if check and result.returncode != 0:
            raise ServerError(f"labgrid-client {' '.join(args)}: {result.stderr.strip()}")
        return result

    def holder(self, place: str) -> str | None:
        """Who holds ``place`` now (``host/user``), None if nobody."""
        return parse_holder(self.client("show", place=place).stdout)
