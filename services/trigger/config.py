"""The ``[trigger]`` section of the site configuration.

Secrets never go into a TOML file of a repository: the GitHub token comes
from ``WRTCI_TRIGGER__GITHUB__TOKEN`` (or ``..._FILE``). Upload and buildbot
webhook callers use API tokens of scope ``upload``, issued with ``wrtci token
create`` and kept (hashed) in the database, not in the configuration.
"""

from __future__ import annotations

import msgspec

MiB = 1024 * 1024


class OfficialConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Official releases and snapshots on the downloads server."""

    enabled: bool = True
    base_url: str = "https://downloads.openwrt.org"
    channels: list[str] = msgspec.field(
        default_factory=lambda: ["snapshot", "stable", "oldstable"])
    """Any of snapshot, stable, oldstable, upcoming (release candidates, tested as stable)."""
    targets: list[str] = []
    """``target/subtarget`` to scan; empty: every target the release lists."""
    interval_s: float = 900.0
    concurrency: int = 8
    """profiles.json requests in flight at once."""
    timeout_s: float = 30.0
    max_document_bytes: int = 32 * MiB


class GithubConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Pull requests whose build workflow produced firmware artifacts."""

    enabled: bool = False
    api_url: str = "https://api.github.com"
    repository: str = "openwrt/openwrt"
    label: str = "ci-test-requested"
    workflow: str | None = None
    """Workflow file name or id whose runs build firmware; None: any workflow."""
    artifact_prefix: str = "openwrt-"
    token: str | None = None
    interval_s: float = 300.0
    timeout_s: float = 60.0
    max_artifact_bytes: int = 1024 * MiB
    """Largest zip downloaded."""
    max_unpacked_bytes: int = 2048 * MiB
    """Largest total of the files unpacked from one artifact (zip bombs stop here)."""
    max_members: int = 2000
    max_ratio: float = 200.0
    """Largest unpacked/packed ratio of a member bigger than 1 MiB."""


class WebConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """The HTTP endpoints: developer uploads and the buildbot webhook."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 8071
    max_upload_bytes: int = 512 * MiB
    allowed_extensions: list[str] = msgspec.field(default_factory=lambda: [
        ".bin", ".img", ".img.gz", ".itb", ".trx", ".chk", ".ubi", ".tar", ".cpio.gz",
        ".vmlinux", ".elf", ".gz",
    ])
    spool_dir: str | None = None
    """Where uploads are written while they stream in; None: the system temp dir."""


class TriggerConfig(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    official: OfficialConfig = msgspec.field(default_factory=OfficialConfig)
    github: GithubConfig = msgspec.field(default_factory=GithubConfig)
    web: WebConfig = msgspec.field(default_factory=WebConfig)
