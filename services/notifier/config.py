"""The ``[notifier]`` section of the site configuration.

Secrets stay out of the TOML file: the SMTP password comes from
``WRTCI_NOTIFIER__MAIL__PASSWORD`` (or ``..._FILE``), the GitHub token from
``WRTCI_NOTIFIER__GITHUB__TOKEN`` (or ``..._FILE``).

Example::

    [notifier]
    web_url = "https://ci.example.org"

    [notifier.mail]
    enabled = true
    host = "smtp.example.org"
    port = 587
    tls = "starttls"
    user = "wrtci"
    from_address = "wrtci <ci@example.org>"

    [[notifier.mail.rules]]
    to = ["openwrt-devel@example.org"]
    source_kinds = ["official"]
    channels = ["snapshot", "stable"]

    [notifier.github]
    enabled = true
"""

from __future__ import annotations

import enum

import msgspec

from wrtci.services.config import ServiceConfig


class Tls(enum.StrEnum):
    NONE = "none"
    STARTTLS = "starttls"
    SSL = "ssl"


class MailRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Who gets the report of a firmware; an empty filter matches everything."""

    to: list[str]
    source_kinds: list[str] = []
    """official, github_pr, upload, buildbot."""
    channels: list[str] = []
    """snapshot, stable, oldstable, pr, custom, a release branch."""


class MailSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = 25
    tls: Tls = Tls.NONE
    user: str | None = None
    """Log in when set (after STARTTLS / over SSL)."""
    password: str | None = None
    from_address: str = "wrtci <wrtci@localhost>"
    timeout_s: float = 30.0
    rules: list[MailRule] = []
    mail_submitter: bool = True
    """Also mail whoever submitted the firmware (an upload, a PR), if an address is known."""
    submitter_addresses: dict[str, str] = {}
    """Submitter name (upload token name, GitHub login) -> mail address; a
    submitter that is an address already needs no entry."""


class GithubSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Commit status and one summary comment on the pull request of a PR firmware."""

    enabled: bool = False
    api_url: str = "https://api.github.com"
    token: str | None = None
    timeout_s: float = 30.0
    context: str = "wrtci"
    """The commit status context."""


class HealthSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Device health to people, as openwrt-tests' daily health check does.

    A device that leaves the pool (health ``unhealthy``) gets one GitHub issue
    "Healthcheck <lab>/<device>" in ``repository`` (opened, or reopened), closed
    when it passes again; without GitHub, a mail to the lab's owners.
    """

    enabled: bool = True
    repository: str | None = None
    """owner/repo for the issues (GitHub via ``[notifier.github]``); None: mail only."""
    label: str = "healthcheck"
    lab_owners: dict[str, list[str]] = {}
    """Lab name -> mail addresses (the mail alternative), and ``@handles``
    mentioned in the issue."""
    durable: str = "notifier-health"


class NotifierSection(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    web_url: str = "http://127.0.0.1:8080"
    """Base URL of the web pages; a firmware is ``<web_url>/firmware/<id>``."""
    durable: str = "notifier"
    max_attempts: int = 6
    """Tries per channel on temporary failures before it is recorded as failed."""
    retry_delays_s: list[float] = msgspec.field(
        default_factory=lambda: [5.0, 30.0, 120.0, 600.0, 1800.0])
    """Wait before the next try, per try (the last one repeats)."""
    lease_s: float = 300.0
    """How long a replica may take to deliver one report before another may try."""
    settle_poll_s: float = 10.0
    """While the results of a done firmware are still being stored or analysed,
    look again after this long ..."""
    settle_timeout_s: float = 900.0
    """... but not longer than this after ``done``: then report what is there."""
    mail: MailSection = msgspec.field(default_factory=MailSection)
    github: GithubSection = msgspec.field(default_factory=GithubSection)
    health: HealthSection = msgspec.field(default_factory=HealthSection)

    def retry_delay(self, attempts: int) -> float:
        """The wait after the ``attempts``-th failed try."""
        delays = self.retry_delays_s or [5.0]
        return delays[min(max(attempts, 1), len(delays)) - 1]


class Config(ServiceConfig, kw_only=True, forbid_unknown_fields=True):
    notifier: NotifierSection = msgspec.field(default_factory=NotifierSection)
