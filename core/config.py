"""Typed configuration: a TOML file, then environment overrides.

Every daemon has one msgspec Struct (unknown keys are errors). Overrides come
from ``WRTCI_<SECTION>__<FIELD>`` (double underscore between levels), e.g.
``WRTCI_NATS__URL`` or ``WRTCI_DATABASE__DSN``; ``…_FILE`` reads the value
from a file, the usual way to hand secrets to a systemd service or container.
Secrets never belong in the TOML file of a repository.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from proto.subjects import Subjects

C = TypeVar("C", bound=msgspec.Struct)

ENV_PREFIX = "WRTCI_"


class ConfigError(ValueError):
    pass


class NatsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str = "nats://127.0.0.1:4222"
    prefix: str = "wrtci"
    creds_file: str | None = None
    """NATS credentials (JWT + nkey) file, as issued per lab or service."""
    token: str | None = None
    user: str | None = None
    password: str | None = None
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 5.0

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.prefix)


class LoggingConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    level: str = "INFO"
    format: str = "json"
    """json (one object per line) or text."""


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str], prefix: str) -> None:
    for name, value in environ.items():
        if not name.startswith(prefix):
            continue
        path = name[len(prefix):].lower().split("__")
        if path[-1].endswith("_file") and len(path) > 1:
            path[-1] = path[-1].removesuffix("_file")
            try:
                value = Path(value).read_text().strip()
            except OSError as exc:
                raise ConfigError(f"{name}: cannot read {value}: {exc}") from exc
        node = raw
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{name}: {part} is not a section")
            node = child
        node[path[-1]] = value


def load_config(
    config_type: type[C],
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    env_prefix: str = ENV_PREFIX,
) -> C:
    """Read ``path`` (optional) and apply environment overrides."""
    raw: dict[str, Any] = {}
    if path is not None:
        try:
            raw = tomllib.loads(Path(path).read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError(f"{path}: {exc}") from exc
    env_raw: dict[str, Any] = {}
    _apply_env(env_raw, os.environ if environ is None else environ, env_prefix)
    # One site-wide file may hold every daemon's sections: each daemon reads
    # the top-level sections it knows; inside a section unknown keys are errors.
    known = {f.name for f in msgspec.structs.fields(config_type)}
    raw = {key: value for key, value in raw.items() if key in known}
    for key, value in env_raw.items():
        if key not in known:
            continue
        if isinstance(value, dict) and isinstance(raw.get(key), dict):
            _deep_update(raw[key], value)
        else:
            raw[key] = value
    try:
        return msgspec.convert(raw, config_type, strict=False)
    except msgspec.ValidationError as exc:
        where = f"{path}: " if path else ""
        raise ConfigError(f"{where}{exc}") from exc


def _deep_update(target: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _deep_update(target[key], value)
        else:
            target[key] = value


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def dump_config(config: msgspec.Struct) -> bytes:
    """TOML text of a config (unset optional fields left out: TOML has no null)."""
    import tomli_w

    return tomli_w.dumps(_drop_none(msgspec.to_builtins(config))).encode()
