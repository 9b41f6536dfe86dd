"""Small helpers shared by tests."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec

from services.config import StorageConfig
from services.storage import minio_client

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args: str, timeout: float = 60, env: dict[str, str] | None = None,
            check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``wrtci ARGS`` as a user would, in a subprocess of this checkout."""
    full_env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    full_env.pop("WRTCI_CONFIG", None)
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        capture_output=True, text=True, timeout=timeout, env=full_env, cwd=PROJECT_ROOT,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"wrtci {' '.join(args)} exited {result.returncode}\n"
            f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
        )
    return result


def read_object(storage_config: StorageConfig, key: str) -> bytes:
    """An object of this test's bucket, whole."""
    response = minio_client(storage_config).get_object(storage_config.bucket, key)
    try:
        return response.read()
    finally:
        response.close()
        response.release_conn()


def put_object(storage_config: StorageConfig, key: str, data: bytes) -> None:
    minio_client(storage_config).put_object(storage_config.bucket, key, io.BytesIO(data),
                                            len(data))


def kcidb_errors(document: Any) -> list[str]:
    """What KernelCI's own validator (kcidb-io, the newest schema) says of a document."""
    import jsonschema
    import kcidb_io

    if not isinstance(document, dict):
        document = msgspec.to_builtins(document)
    try:
        kcidb_io.schema.LATEST.validate(document)
    except jsonschema.ValidationError as exc:
        return [f"{'/'.join(map(str, exc.absolute_path))}: {exc.message}"]
    return []


def assert_kcidb_valid(document: Any) -> None:
    errors = kcidb_errors(document)
    assert not errors, errors
