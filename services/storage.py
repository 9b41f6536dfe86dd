"""The object-storage client every central service uses (S3 API: MinIO, or moto locally)."""

from __future__ import annotations

import urllib3
from minio import Minio
from minio.error import S3Error

from wrtci.services.config import StorageConfig

MISSING_OBJECT_CODES = frozenset({"NoSuchKey", "NoSuchObject", "ResourceNotFound", "NoSuchBucket"})
"""S3 error codes that mean "no such object" (MinIO and moto say it in several ways)."""


def is_missing(exc: S3Error) -> bool:
    return exc.code in MISSING_OBJECT_CODES


def minio_client(config: StorageConfig) -> Minio:
    """A client whose every request has a timeout; idempotent requests retry on 5xx."""
    http = urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=min(10.0, config.timeout_s), read=config.timeout_s),
        retries=urllib3.Retry(total=3, backoff_factor=0.2,
                              status_forcelist=[500, 502, 503, 504]),
    )
    return Minio(config.endpoint, access_key=config.access_key, secret_key=config.secret_key,
                 secure=config.secure, region=config.region, http_client=http)


def content_type(stream: str) -> str:
    """The Content-Type a stored log or artifact is written and served with."""
    if stream.endswith(".xml"):
        return "application/xml"
    if stream.endswith(".json"):
        return "application/json"
    return "text/plain; charset=utf-8"
