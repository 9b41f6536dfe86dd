"""The ``[kcidb]`` section: the KCIDB origin, the public URL of logs, the kcidb-ng endpoint.

Read by the results service (forwarding), the API (the dashboard API for kci-dev)
and ``wrtci kcidb export``.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from wrtci.services.kcidb.export import KCIDB_MINOR, Exporter


class KcidbSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = False
    url: str | None = None
    """Base URL of a kcidb-ng REST endpoint (``/submit`` and ``/status`` below it).
    No default: nothing is forwarded anywhere until an operator names the endpoint."""
    token: str | None = None
    """JWT; give it as WRTCI_KCIDB__TOKEN or WRTCI_KCIDB__TOKEN_FILE, not in the TOML."""
    origin: Annotated[str, msgspec.Meta(pattern=r"^[a-z0-9_]+$")] = "wrtci"
    """The KCIDB origin: the prefix of every exported id (KernelCI assigns it)."""
    public_url: str | None = None
    """Base URL of the wrtci API as KCIDB readers reach it (https://ci.example.org): the
    ``log_url`` of tests points at its log route. Unset: exports carry no log_url."""
    interval_s: float = 30.0
    """How often the forwarder looks for new results."""
    max_objects: int = 5000
    """Objects per submission."""
    timeout_s: float = 30.0
    max_tries: int = 8
    backoff_s: float = 5.0
    """First retry delay after a failed request (doubles, capped at 10 minutes)."""
    minor_version: Annotated[int, msgspec.Meta(ge=0, le=KCIDB_MINOR)] = KCIDB_MINOR
    """KCIDB v5 minor of the submitted documents (at most what the schema knows)."""

    def exporter(self) -> Exporter:
        return Exporter(origin=self.origin, public_url=self.public_url)

    @property
    def forwarding(self) -> bool:
        return self.enabled and bool(self.url)
