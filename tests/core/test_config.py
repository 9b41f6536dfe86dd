"""Typed config from TOML with environment overrides."""

from __future__ import annotations

import msgspec
import pytest

from wrtci.core.config import ConfigError, NatsConfig, dump_config, load_config
from wrtci.services.cli.common import CliConfig


def test_toml_then_environment(tmp_path) -> None:
    path = tmp_path / "site.toml"
    path.write_text('[nats]\nurl = "nats://nats.example:4222"\nprefix = "ci"\n'
                    '[database]\nmax_pool = 4\n[other_service]\nx = 1\n')
    secret = tmp_path / "dsn"
    secret.write_text("postgresql://u:secret@db/wrtci\n")
    config = load_config(CliConfig, path, environ={
        "WRTCI_NATS__URL": "nats://override:4222",
        "WRTCI_DATABASE__MAX_POOL": "7",
        "WRTCI_DATABASE__DSN_FILE": str(secret),
        "WRTCI_CONFIG": "/ignored",
    })
    assert config.nats.url == "nats://override:4222"
    assert config.nats.prefix == "ci"
    assert config.database.max_pool == 7
    assert config.database.dsn == "postgresql://u:secret@db/wrtci"


def test_unknown_key_in_a_section_is_an_error(tmp_path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[nats]\nulr = 'typo'\n")
    with pytest.raises(ConfigError, match="ulr"):
        load_config(CliConfig, path, environ={})


def test_wrong_type_is_an_error(tmp_path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[database]\nmax_pool = 'many'\n")
    with pytest.raises(ConfigError, match="max_pool"):
        load_config(CliConfig, path, environ={})


def test_broken_toml_names_the_file(tmp_path) -> None:
    path = tmp_path / "site.toml"
    path.write_text("[nats\n")
    with pytest.raises(ConfigError, match=r"site\.toml"):
        load_config(CliConfig, path, environ={})


def test_dump_round_trips(tmp_path) -> None:
    config = CliConfig(nats=NatsConfig(url="nats://127.0.0.1:1", prefix="x"))
    path = tmp_path / "out.toml"
    path.write_bytes(dump_config(config))
    assert load_config(CliConfig, path, environ={}) == config
    assert msgspec.structs.asdict(config)["nats"].prefix == "x"
