"""Configuration of the results service (one section each in the site TOML)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import msgspec

from services.config import ServiceConfig
from services.results.kcidb import KCIDB_MINOR, Exporter

DEFAULT_SIGNATURES = Path(__file__).with_name("signatures.toml")


class ResultsSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    durable: str = "results"
    batch_size: int = 500
    """Messages fetched and written per transaction."""
    fetch_timeout_s: float = 0.5
    work_interval_s: float = 1.0
    """How often the analysis loop looks for due work when it found none."""
    work_batch: int = 20
    signatures_file: str | None = None
    """Log-analysis signatures (TOML); default: the file shipped with wrtci."""
    log_max_bytes: int = 32 * 1024 * 1024
    log_retry_delay_s: float = 5.0
    """First wait for a console log that is not in object storage yet (doubles)."""
    log_max_tries: int = 10
    flaky_window: int = 20
    """Latest runs of a test on a device type that its flakiness score looks at."""
    flaky_threshold: float = 0.2
    log_base_url: str | None = None
    """Public URL prefix of object storage keys, for KCIDB ``log_url``."""


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


class Config(ServiceConfig, kw_only=True, forbid_unknown_fields=True):
    results: ResultsSection = msgspec.field(default_factory=ResultsSection)
    kcidb: KcidbSection = msgspec.field(default_factory=KcidbSection)
