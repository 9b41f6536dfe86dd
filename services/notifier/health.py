"""Device health reaches people: one GitHub issue per device out of the pool.

openwrt-tests' daily health check opens (or reopens) the issue
"Healthcheck <lab>/<device>" when a device fails and closes it when the device
passes; labs' maintainers watch those issues. The notifier does the same from
``device.health`` events:

- health ``unhealthy`` (the device left the pool) and no open issue: find the
  issue by its title (``GET /repos/{repo}/issues?labels=healthcheck&state=all``)
  and reopen it with a new body, or create it; the body links the failing
  check's console log and says when the device last passed;
- health ``healthy`` and an open issue: a comment saying so, and it is closed.

``health_issues`` (one row per device) is the claim: a replica locks the row
(``SELECT ... FOR UPDATE``) for the whole decision, GitHub calls included,
so two replicas handling two events of one device take turns, and the second
sees what the first did. An event older than the last handled changes
nothing. A crash after GitHub answered but before the commit is repaired by
the title lookup: the issue is found and edited, never created twice.

Without GitHub (no ``repository`` or ``[notifier.github]`` off), the lab's
owners (``lab_owners``) get a mail on each change instead.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

import aiohttp
import asyncpg
import msgspec

from wrtci.proto.events import CloudEvent, DeviceHealthChanged, DeviceHealthData
from wrtci.proto.model import DeviceHealth
from wrtci.proto.storage import HEALTH_LOG_PATH, health_log_of_path
from wrtci.proto.subjects import Subjects
from wrtci.services.consume import MsgMeta, Reject, Retry
from wrtci.services.notifier import mail
from wrtci.services.notifier.config import NotifierSection
from wrtci.services.notifier.delivery import PermanentFailure, TemporaryFailure
from wrtci.services.notifier.github import call, client_for

log = logging.getLogger(__name__)

MAX_ISSUE_PAGES = 10


def issue_title(lab: str, device: str) -> str:
    return f"Healthcheck {lab}/{device}"


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return "never (as far as wrtci knows)"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def log_link(data: DeviceHealthData, web_url: str) -> str | None:
    """The check's console log on wrtci's web address: only a path of this lab's
    health log of this device (``proto.storage.health_log_path``) — a lab cannot
    make the issue link anywhere else."""
    url = data.log_url or ""
    if not url.startswith(HEALTH_LOG_PATH):
        return None
    found = health_log_of_path(url[len(HEALTH_LOG_PATH):])
    if found is None or found[:2] != (data.lab, data.device):
        return None
    return web_url.rstrip("/") + url


def failure_body(data: DeviceHealthData, last_passed: dt.datetime | None, web_url: str,
                 mentions: list[str]) -> str:
    link = log_link(data, web_url)
    log_line = (f"Console log of the failing check: {link}" if link
                else f"Lab status: {web_url.rstrip('/')}/labs")
    lines = [
        "### Healthcheck failed",
        "",
        f"- **Lab**: `{data.lab}`",
        f"- **Device**: `{data.device}` ({data.device_type})",
        f"- **Consecutive failed checks**: {data.consecutive_failures}",
        f"- **Last passed**: {_when(last_passed)}",
    ]
    if mentions:
        lines.append(f"- **Maintainers**: {', '.join(mentions)}")
    lines += ["", "The device is out of the pool: it takes no jobs until a check passes.",
              "", log_line]
    if data.message:
        lines += ["", "Last lines of the check:", "", "```", data.message[-1500:], "```"]
    return "\n".join(lines)


class Issue(msgspec.Struct, frozen=True):
    number: int
    title: str = ""
    state: str = "open"
    pull_request: dict | None = None


class HealthIssues:
    """The GitHub side: find by title, open/reopen, close; failures sorted by ``call``."""

    def __init__(self, session: aiohttp.ClientSession, section: NotifierSection) -> None:
        if not section.health.repository:
            raise ValueError("[notifier.health] repository is not set")
        self.client = client_for(session, section.github)
        self.repo = section.health.repository
        self.label = section.health.label

    async def find(self, title: str) -> int | None:
        url: str | None = f"/repos/{self.repo}/issues"
        params: dict[str, Any] | None = {"state": "all", "labels": self.label, "per_page": 100}
        for _ in range(MAX_ISSUE_PAGES):
            if url is None:
                return None
            body, url = await call(self.client, "GET", url, params=params)
            params = None
            try:
                issues = msgspec.json.decode(body, type=list[Issue])
            except msgspec.DecodeError as exc:
                raise TemporaryFailure(f"unexpected issue list: {exc}") from exc
            for issue in issues:
                if issue.title == title and issue.pull_request is None:
                    return issue.number
        return None

    async def open(self, title: str, body: str, known: int | None) -> int:
        number = known or await self.find(title)
        if number is not None:
            await call(self.client, "PATCH", f"/repos/{self.repo}/issues/{number}",
                       payload={"state": "open", "body": body, "labels": [self.label]})
            return number
        answer, _ = await call(self.client, "POST", f"/repos/{self.repo}/issues",
                               payload={"title": title, "body": body, "labels": [self.label]})
        try:
            return msgspec.json.decode(answer, type=Issue).number
        except msgspec.DecodeError as exc:
            raise TemporaryFailure(f"unexpected answer to the new issue: {exc}") from exc

    async def close(self, title: str, comment: str, known: int | None) -> int | None:
        number = known or await self.find(title)
        if number is None:
            return None
        await call(self.client, "POST", f"/repos/{self.repo}/issues/{number}/comments",
                   payload={"body": comment})
        await call(self.client, "PATCH", f"/repos/{self.repo}/issues/{number}",
                   payload={"state": "closed", "state_reason": "completed"})
        return number


class HealthNotifier:
    def __init__(self, pool: asyncpg.Pool, section: NotifierSection,
                 issues: HealthIssues | None, subjects: Subjects) -> None:
        self.subjects = subjects
        self.pool = pool
        self.section = section
        self.issues = issues

    @property
    def enabled(self) -> bool:
        return self.section.health.enabled and (
            self.issues is not None or self.section.mail.enabled)

    async def handle(self, event: CloudEvent, meta: MsgMeta) -> None:
        if not isinstance(event, DeviceHealthChanged):
            return
        data = event.data
        try:
            sender = self.subjects.lab_of_subject(meta.subject)
        except ValueError as exc:
            raise Reject(f"device.health on {meta.subject!r}: {exc}") from exc
        if sender != data.lab:  # a lab speaks only for its own devices
            raise Reject(f"device.health for lab {data.lab!r} sent by lab {sender!r}")
        failing = data.health is DeviceHealth.UNHEALTHY
        passing = data.health is DeviceHealth.HEALTHY
        ids = {"lab": data.lab, "device": data.device, "event_id": event.id}
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute("INSERT INTO health_issues (lab, device) VALUES ($1, $2) "
                               "ON CONFLICT DO NOTHING", data.lab, data.device)
            row = await conn.fetchrow("SELECT * FROM health_issues WHERE lab = $1 AND "
                                      "device = $2 FOR UPDATE", data.lab, data.device)
            if row["last_event_at"] is not None and event.time <= row["last_event_at"]:
                log.info("older device.health event: nothing to do", extra=ids)
                return
            last_passed = row["last_passed_at"]
            if data.check_passed:
                last_passed = max(filter(None, [last_passed, event.time]))
            if data.last_passed_at is not None:
                last_passed = max(filter(None, [last_passed, data.last_passed_at]))
            state, number = row["state"], row["issue_number"]
            try:
                if failing and state != "open":
                    number = await self._opened(data, last_passed, number, event.time)
                    state = "open"
                elif passing and state == "open":
                    number = await self._closed(data, event.time, number)
                    state = "closed"
            except TemporaryFailure as exc:
                raise Retry(f"health notice not delivered: {exc}",
                            exc.retry_after_s or 30.0) from exc
            except PermanentFailure as exc:
                log.error("health notice refused; not retried: %s", exc, extra=ids)
            await conn.execute(
                "UPDATE health_issues SET state = $3, issue_number = $4, last_passed_at = $5, "
                "last_event_at = $6, failed_since = CASE WHEN $3 = 'open' THEN "
                "coalesce(failed_since, $6) ELSE NULL END, updated_at = now() "
                "WHERE lab = $1 AND device = $2",
                data.lab, data.device, state, number, last_passed, event.time)
        if state != row["state"]:
            log.info("device health issue %s", state, extra=ids | {"issue": number})

    async def _opened(self, data: DeviceHealthData, last_passed: dt.datetime | None,
                      number: int | None, at: dt.datetime) -> int | None:
        health = self.section.health
        owners = health.lab_owners.get(data.lab, [])
        mentions = [o for o in owners if o.startswith("@")]
        body = failure_body(data, last_passed, self.section.web_url, mentions)
        title = issue_title(data.lab, data.device)
        if self.issues is not None:
            return await self.issues.open(title, body, number)
        await self._mail(data, f"{title}: failed", body, owners, at)
        return None

    async def _closed(self, data: DeviceHealthData, at: dt.datetime,
                      number: int | None) -> int | None:
        title = issue_title(data.lab, data.device)
        text = (f"The device passed its health check at {_when(at)} and is back in the "
                "pool. Closed by wrtci.")
        if self.issues is not None:
            return await self.issues.close(title, text, number)
        await self._mail(data, f"{title}: recovered", text,
                         self.section.health.lab_owners.get(data.lab, []), at)
        return None

    async def _mail(self, data: DeviceHealthData, subject: str, body: str,
                    owners: list[str], at: dt.datetime) -> None:
        to = [o for o in owners if "@" in o and not o.startswith("@")]
        if not self.section.mail.enabled or not to:
            log.info("no health issue channel for this lab (no GitHub, no owner address)",
                     extra={"lab": data.lab, "device": data.device})
            return
        section = self.section.mail
        message = mail.build_message(section, to, subject, body,
                                     mail.message_id(f"health:{subject}:{at.isoformat()}",
                                                     0, section.from_address))
        await mail.send(section, message)  # raises Temporary/PermanentFailure
