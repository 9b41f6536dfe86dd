"""The configuration sections only the central services have: database and object storage."""

from __future__ import annotations

import msgspec

from wrtci.core.config import LoggingConfig, NatsConfig


class DatabaseConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    dsn: str = "postgresql://wrtci@127.0.0.1:5432/wrtci"
    min_pool: int = 1
    max_pool: int = 10
    command_timeout_s: float = 30.0


class StorageConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    endpoint: str = "127.0.0.1:9000"
    """host:port of the S3 API (MinIO in production)."""
    secure: bool = False
    access_key: str | None = None
    secret_key: str | None = None
    region: str = "us-east-1"
    bucket: str = "wrtci"
    presign_expiry_s: int = 7 * 24 * 3600
    timeout_s: float = 30.0


class ServiceConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The sections every central daemon shares; each adds its own section."""

    nats: NatsConfig = msgspec.field(default_factory=NatsConfig)
    database: DatabaseConfig = msgspec.field(default_factory=DatabaseConfig)
    storage: StorageConfig = msgspec.field(default_factory=StorageConfig)
    logging: LoggingConfig = msgspec.field(default_factory=LoggingConfig)
