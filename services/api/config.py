"""The ``[api]`` section of the site configuration.

Control tokens are configured like the trigger's upload tokens: token name
(who acts) -> sha256 hex digest of the token, e.g.
``WRTCI_API__TOKENS__ALICE=<sha256 hex>`` or ``[api.tokens] alice = "<hex>"``.
"""

from __future__ import annotations

import msgspec

from services.config import ServiceConfig
from services.kcidb.config import KcidbSection


class ApiSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    host: str = "127.0.0.1"
    port: int = 8072
    tokens: dict[str, str] = {}
    """Token name -> sha256 hex digest; needed for retry / cancel (POST)."""
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
