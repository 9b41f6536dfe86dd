"""The start both lifecycle daemons (scheduler, timeout) share."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nats.js import JetStreamContext

from wrtci.core.runtime import Daemon, ServiceApp
from wrtci.services import db
from wrtci.services.config import ServiceConfig
from wrtci.services.lifecycle.dispatch import Dispatcher, minio_presigner
from wrtci.services.lifecycle.machine import Lifecycle


class LifecycleApp(ServiceApp):
    """A daemon that moves firmware and jobs through their states; ``run()`` is its
    whole life, :meth:`open_lifecycle` the first thing its ``open`` does."""

    def __init__(self, config: ServiceConfig) -> None:
        super().__init__()
        self.config = config
        self.subjects = config.nats.subjects

    async def open_lifecycle(self, daemon: Daemon, *,
                             dispatcher_options: Mapping[str, Any] | None = None,
                             **lifecycle_options: Any) -> JetStreamContext:
        """NATS, the pool, the dispatcher and the :class:`Lifecycle` on them (``self.nc``,
        ``self.pool``, ``self.dispatcher``, ``self.lifecycle``); returns JetStream."""
        config = self.config
        self.nc = await daemon.connect_nats(config.nats)
        self.pool = await db.open_pool(daemon, config.database)
        js = self.nc.jetstream(timeout=config.nats.request_timeout_s)
        self.dispatcher = Dispatcher(self.nc, js, self.subjects, minio_presigner(config.storage),
                                     **(dispatcher_options or {}))
        self.lifecycle = Lifecycle(self.pool, self.dispatcher, self.subjects,
                                   **lifecycle_options)
        return js
