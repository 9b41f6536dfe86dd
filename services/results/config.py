"""Configuration of the results service (one section each in the site TOML)."""

from __future__ import annotations

from pathlib import Path

import msgspec

from wrtci.services.config import ServiceConfig
from wrtci.services.kcidb.config import KcidbSection

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


class Config(ServiceConfig, kw_only=True, forbid_unknown_fields=True):
    results: ResultsSection = msgspec.field(default_factory=ResultsSection)
    kcidb: KcidbSection = msgspec.field(default_factory=KcidbSection)
