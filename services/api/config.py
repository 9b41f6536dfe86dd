"""The ``[api]`` section of the site configuration.

Retry / cancel need an API token of scope ``control`` (``wrtci token create``,
kept hashed in the database); reading is open unless ``require_read_token``.
"""

from __future__ import annotations

import msgspec

from wrtci.services.config import ServiceConfig
from wrtci.services.kcidb.config import KcidbSection


class ApiSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8072
    require_read_token: bool = False
    """Pages and REST reads need a token too (any scope); /healthz stays open."""
    page_size: int = 50
    max_page_size: int = 500
    kv_timeout_s: float = 2.0
    """Reading live lab heartbeats from the KV bucket; the page shows the DB when it is slow."""
    log_chunk_bytes: int = 64 * 1024
    """Console logs are streamed to the client in pieces of this size, never read whole."""
    shutdown_timeout_s: float = 10.0
    """Requests in flight get this long to finish on SIGTERM."""


class Config(ServiceConfig, kw_only=True, forbid_unknown_fields=True):
    api: ApiSection = msgspec.field(default_factory=ApiSection)
    kcidb: KcidbSection = msgspec.field(default_factory=KcidbSection)
    """The KCIDB origin and public URL, for the dashboard API (``/dashboard/api/``)."""
