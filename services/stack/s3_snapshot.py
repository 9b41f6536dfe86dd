"""Keep the local S3 emulator's objects across restarts of ``wrtci up``.

moto keeps objects in memory; a production site uses MinIO, which persists by
itself. The local stack saves every object under the state directory when it
stops and puts back what is missing when it starts.
"""

from __future__ import annotations

import logging
from pathlib import Path

from minio import Minio

log = logging.getLogger(__name__)


def save(client: Minio, directory: Path) -> int:
    count = 0
    for bucket in client.list_buckets():
        for obj in client.list_objects(bucket.name, recursive=True):
            target = directory / bucket.name / obj.object_name
            if not target.resolve().is_relative_to(directory.resolve()):
                log.warning("not saving object with unsafe key", extra={"key": obj.object_name})
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            client.fget_object(bucket.name, obj.object_name, str(target))
            count += 1
    return count


def restore(client: Minio, directory: Path) -> int:
    if not directory.is_dir():
        return 0
    count = 0
    for bucket_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
        if not client.bucket_exists(bucket_dir.name):
            client.make_bucket(bucket_dir.name)
        for path in sorted(p for p in bucket_dir.rglob("*") if p.is_file()):
            client.fput_object(bucket_dir.name, path.relative_to(bucket_dir).as_posix(), str(path))
            count += 1
    return count
