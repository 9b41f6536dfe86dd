"""The lab's suite checkout at run time: its environment, synced on a new revision.

Every job and health check asks ``Suite.current()`` for the interpreter to run
pytest with. It looks at the checkout's git revision; when that changed since
the last sync, the environment is rebuilt from the checkout's declaration (or
reused, when the dependencies did not change). A failed sync is remembered
for its revision (so devices do not retry pip one after the other) until the
revision changes, ``sync(force=True)`` is called, or ``retry_s`` passed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path

from wrtci.lab_daemon.config import LabSection
from wrtci.lab_daemon.suite_env import SuiteEnv, SuiteEnvError, build_env, suite_revision

log = logging.getLogger(__name__)


class Suite:
    def __init__(self, lab: LabSection, retry_s: float = 600.0) -> None:
        self.lab = lab
        self.checkout = Path(lab.suite_dir)
        self.retry_s = retry_s
        self.env: SuiteEnv | None = None
        self._failed: tuple[str | None, SuiteEnvError, float] | None = None
        self._lock = asyncio.Lock()

    async def current(self) -> SuiteEnv:
        """The environment for the checkout as it is now; SuiteEnvError if it cannot be had."""
        async with self._lock:
            revision = await asyncio.to_thread(suite_revision, self.checkout)
            if self.env is not None and self.env.revision == revision:
                return self.env
            if self._failed is not None:
                failed_revision, error, at = self._failed
                if failed_revision == revision and time.monotonic() - at < self.retry_s:
                    raise error
            return await self._sync(revision)

    async def sync(self) -> SuiteEnv:
        """Build (or reuse) the environment now, whatever was remembered."""
        async with self._lock:
            revision = await asyncio.to_thread(suite_revision, self.checkout)
            return await self._sync(revision)

    async def _sync(self, revision: str | None) -> SuiteEnv:
        if self.lab.python:  # the lab maintainer's own interpreter: nothing to build
            self.env = SuiteEnv(python=self.lab.python, revision=revision,
                                digest="", source="lab.python")
            return self.env
        log.info("syncing the suite environment", extra={"suite": str(self.checkout),
                                                          "revision": revision})
        started = time.monotonic()
        try:
            env = await asyncio.to_thread(
                build_env, self.checkout, self.lab.envs_dir,
                base_python=self.lab.suite_base_python,
                timeout_s=self.lab.suite_sync_timeout_s)
        except SuiteEnvError as exc:
            self._failed = (revision, exc, time.monotonic())
            log.error("suite environment: %s", exc, extra={"suite": str(self.checkout)})
            raise
        self._failed = None
        self.env = env
        log.info("suite environment ready", extra={
            "suite": str(self.checkout), "revision": env.revision, "python": env.python,
            "seconds": round(time.monotonic() - started, 2)})
        return env
