"""Typed configuration: a TOML file, then environment overrides.

Every daemon has one msgspec Struct (unknown keys are errors). Overrides come
from ``WRTCI_<SECTION>__<FIELD>`` (double underscore between levels), e.g.
``WRTCI_NATS__URL`` or ``WRTCI_DATABASE__DSN``; ``…_FILE`` reads the value
from a file, the usual way to hand secrets to a systemd service or container.
Names are resolved against the config's real fields: a field that itself ends
in ``_file`` (``creds_file``) is set by ``WRTCI_NATS__CREDS_FILE`` as a path;
only when the struct has no such field and has the name without the suffix is
the value read from the file.
Secrets never belong in the TOML file of a repository.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from wrtci.proto.subjects import Subjects

C = TypeVar("C", bound=msgspec.Struct)

ENV_PREFIX = "WRTCI_"


class ConfigError(ValueError):
    pass


class NatsConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str = "nats://127.0.0.1:4222"
    """The server, or a cluster's servers separated by commas (as the nats CLI takes
    them): the client picks one and moves to another when it goes away. Listing every
    node matters when the client starts while a node is down (it learns the others
    only from a server it reached)."""
    prefix: str = "wrtci"
    creds_file: str | None = None
    """NATS credentials: the NKey seed file ``wrtci lab add`` writes (``SU…``),
    or a decentralised-JWT ``.creds`` file; the kind is recognised by content."""
    token: str | None = None
    user: str | None = None
    password: str | None = None
    tls_ca_file: str | None = None
    """CA that signed the server certificate (PEM); set it (or a ``tls://`` url) for TLS."""
    tls_cert_file: str | None = None
    """Client certificate (PEM) when the server verifies clients; with ``tls_key_file``."""
    tls_key_file: str | None = None
    tls_hostname: str | None = None
    """Name to verify the server certificate against, when the url holds an address."""
    connect_timeout_s: float = 5.0
    request_timeout_s: float = 5.0

    @property
    def subjects(self) -> Subjects:
        return Subjects(self.prefix)

    @property
    def servers(self) -> list[str]:
        return [server.strip() for server in self.url.split(",") if server.strip()]


class LoggingConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    level: str = "INFO"
    format: str = "json"
    """json (one object per line) or text."""


def _struct_type(annotation: Any) -> type[msgspec.Struct] | None:
    """The Struct type of a field (``X``, ``X | None``), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, msgspec.Struct):
        return annotation
    for arg in getattr(annotation, "__args__", ()):
        if isinstance(arg, type) and issubclass(arg, msgspec.Struct):
            return arg
    return None


def _field_names(struct: type[msgspec.Struct] | None) -> dict[str, Any]:
    if struct is None:
        return {}
    return {f.name: f.type for f in msgspec.structs.fields(struct)}


def _resolve_file_suffix(config_type: type | None, path: list[str]) -> bool:
    """Whether ``path``'s last part is ``<field>_file`` meaning "read <field> from a file".

    Walks the config's structs: a struct with a field literally named like
    the last part (``creds_file``) takes the value as is.
    """
    if not path[-1].endswith("_file") or len(path) < 2:
        return False
    struct = config_type if isinstance(config_type, type) else None
    for part in path[:-1]:
        struct = _struct_type(_field_names(struct).get(part)) if struct else None
    if struct is None:
        return config_type is None  # no type to ask: the old suffix rule
    fields = _field_names(struct)
    if path[-1] in fields:
        return False
    return path[-1].removesuffix("_file") in fields


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str], prefix: str,
               config_type: type | None = None) -> None:
    for name, value in environ.items():
        if not name.startswith(prefix):
            continue
        path = name[len(prefix):].lower().split("__")
        if _resolve_file_suffix(config_type, path):
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
    _apply_env(env_raw, os.environ if environ is None else environ, env_prefix, config_type)
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
