"""The notifier daemon: a firmware's move to ``done`` fires its reports, once.

It consumes ``firmware.state`` events (a durable consumer its replicas share)
and, for ``done``:

1. finds the round the event ends (a retry reopens a done firmware as a new
   round, which ends with its own ``done``) — an older round's event, one
   whose commit is not visible yet, or one for a firmware not in the database
   is skipped, retried, or rejected;
2. waits (nak with delay) while the results service still stores or analyses
   the firmware's last attempts, at most ``settle_timeout_s`` after done;
3. delivers each channel — mail, and for a pull request firmware the commit
   status and the PR comment — through the ``notifications`` table, which
   makes each go out once (``delivery``);
4. naks the event with the shortest wait while some channel is to be tried
   again, and acks it when every channel is sent or failed for good.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import math

import aiohttp
import asyncpg
from nats.js.api import ConsumerConfig, DeliverPolicy

from wrtci.core.runtime import Daemon, check_all, check_nats
from wrtci.proto.events import CloudEvent, FirmwareStateChanged
from wrtci.proto.model import FirmwareState
from wrtci.proto.subjects import Subjects
from wrtci.proto.topology import service_consumer
from wrtci.services import db
from wrtci.services.checks import check_database
from wrtci.services.consume import MsgMeta, Pull, Reject, Retry, consume
from wrtci.services.notifier import mail, report
from wrtci.services.notifier.config import Config, NotifierSection
from wrtci.services.notifier.delivery import DeliveryState, Outcome, deliver
from wrtci.services.notifier.facts import FirmwareFacts, checkout_state, load_facts, results_pending
from wrtci.services.notifier.github import GithubReporter
from wrtci.services.notifier.health import HealthIssues, HealthNotifier
from wrtci.services.notifier.store import Channel, Delivery

log = logging.getLogger(__name__)

NOT_VISIBLE_YET_S = 1.0
"""The scheduler publishes ``done`` inside its transaction: the commit follows at once."""


def consumer_config(subjects: Subjects, section: NotifierSection) -> ConsumerConfig:
    # Every wait is a redelivery: enough for the settle waits and each channel's
    # tries, with room for crashes; the notifications table bounds the tries.
    settle_waits = math.ceil(section.settle_timeout_s / max(section.settle_poll_s, 0.1))
    config = service_consumer(section.durable, [subjects.event("firmware.state")],
                              ack_wait=section.lease_s + 30)
    config.max_deliver = settle_waits + 3 * section.max_attempts + 10
    config.backoff = None  # every nak names its own delay
    return config


def event_round(event: FirmwareStateChanged) -> int | None:
    """The round a ``done`` event ends, from its id (``...:done`` or ``...:done:r<N>``).

    None when the id does not have the scheduler's form (then the current
    round of the firmware is taken).
    """
    prefix = f"firmware.state:{event.data.firmware_id}:{FirmwareState.DONE.value}"
    if event.id == prefix:
        return 0
    rest = event.id.removeprefix(prefix + ":r")
    if rest != event.id and rest.isdigit():
        return int(rest)
    return None


class Notifier:
    def __init__(self, pool: asyncpg.Pool, section: NotifierSection,
                 github: GithubReporter | None) -> None:
        self.pool = pool
        self.section = section
        self.github = github

    async def handle(self, event: CloudEvent, meta: MsgMeta) -> None:
        if not isinstance(event, FirmwareStateChanged):
            return
        if event.data.state is not FirmwareState.DONE:
            return
        firmware_id = event.data.firmware_id
        ids = {"firmware_id": firmware_id, "event_id": event.id}
        async with self.pool.acquire() as conn:
            checkout = await checkout_state(conn, firmware_id)
            if checkout is None:
                raise Reject(f"done event for unknown firmware {firmware_id!r}")
            round_ = event_round(event)
            if round_ is None:
                round_ = checkout.round
            if round_ < checkout.round:
                log.info("done event of an earlier round: its report is superseded",
                         extra=ids | {"round": round_, "current_round": checkout.round})
                return
            if checkout.state != FirmwareState.DONE.value or round_ > checkout.round:
                raise Retry(f"firmware not done in round {round_} yet", NOT_VISIBLE_YET_S)
            pending = await results_pending(conn, firmware_id)
            waited = (dt.datetime.now(dt.UTC) - checkout.done_at).total_seconds() \
                if checkout.done_at else 0.0
            if pending and waited < self.section.settle_timeout_s:
                raise Retry(f"{pending} jobs' results not stored or analysed yet",
                            self.section.settle_poll_s)
            if pending:
                log.warning("reporting before all results are in",
                            extra=ids | {"pending_jobs": pending})
            facts = await load_facts(conn, firmware_id)
        if facts is None:  # deleted meanwhile
            raise Reject(f"firmware {firmware_id!r} went away")
        facts.round = round_
        outcomes = await self.report(facts)
        later = [o.wait_s for o in outcomes if o.state is DeliveryState.LATER]
        if later:
            raise Retry("some reports are to be tried again", max(min(later), 0.05))

    async def report(self, facts: FirmwareFacts) -> list[Outcome]:
        outcomes = []
        section = self.section
        # The report's one line, also where no channel is configured (``wrtci up``).
        log.info("firmware report: %s", report.mail_subject(facts),
                 extra={"firmware_id": facts.firmware_id, "round": facts.round,
                        "verdict": report.verdict(facts).state,
                        "web_url": report.web_link(section.web_url, facts.firmware_id)})
        if section.mail.enabled:
            to = mail.recipients(facts, section.mail)
            if to:
                outcomes.append(await self._mail(facts, to))
            else:
                log.info("no mail recipients for this firmware",
                         extra={"firmware_id": facts.firmware_id})
        if self.github is not None and facts.pull_request is not None:
            outcomes += await self._github(facts)
        return outcomes

    def _delivery(self, facts: FirmwareFacts, channel: Channel) -> Delivery:
        return Delivery(facts.firmware_id, facts.round, channel)

    async def _mail(self, facts: FirmwareFacts, to: list[str]) -> Outcome:
        section = self.section.mail
        msg_id = mail.message_id(facts.firmware_id, facts.round, section.from_address)
        message = mail.build_message(section, to, report.mail_subject(facts),
                                     report.mail_body(facts, self.section.web_url), msg_id)

        async def send() -> str:
            await mail.send(section, message)
            return msg_id

        return await deliver(self.pool, self.section, self._delivery(facts, Channel.MAIL),
                             ", ".join(to), send)

    async def _github(self, facts: FirmwareFacts) -> list[Outcome]:
        github, pr = self.github, facts.pull_request
        if github is None or pr is None:
            return []  # GitHub reports only for a pull request, when GitHub is configured
        verdict = report.verdict(facts)
        link = report.web_link(self.section.web_url, facts.firmware_id)

        async def status() -> str:
            return await github.set_status(pr, verdict.state, link,
                                           report.status_description(facts))

        async def comment() -> str:
            return await github.upsert_comment(pr, report.marker(facts.firmware_id),
                                               report.comment_body(facts, self.section.web_url))

        return [
            await deliver(self.pool, self.section,
                          self._delivery(facts, Channel.GITHUB_STATUS),
                          f"{pr.repository}@{pr.head_sha}", status),
            await deliver(self.pool, self.section,
                          self._delivery(facts, Channel.GITHUB_COMMENT),
                          f"{pr.repository}#{pr.number}", comment),
        ]


async def run(config: Config, stop: asyncio.Event) -> None:
    section = config.notifier
    subjects = config.nats.subjects
    async with Daemon("notifier", stop) as daemon:
        nc = await daemon.connect_nats(config.nats)
        pool = await db.open_pool(daemon, config.database)
        session = await daemon.enter(aiohttp.ClientSession())
        github = GithubReporter(session, section.github) if section.github.enabled else None
        notifier = Notifier(pool, section, github)
        log.info("notifier running", extra={"mail": section.mail.enabled,
                                            "github": section.github.enabled})
        js = nc.jetstream(timeout=config.nats.request_timeout_s)
        daemon.loop("reports", lambda stop: consume(
            js, Pull(subjects.events_stream, consumer_config(subjects, section), batch=10),
            notifier.handle, stop))
        health = health_notifier(pool, section, session, subjects)
        if health.enabled:
            daemon.loop("health", lambda stop: consume(
                js, Pull(subjects.events_stream, health_consumer_config(subjects, section),
                         batch=10), health.handle, stop))
        await daemon.serve()


def health_notifier(pool: asyncpg.Pool, section: NotifierSection,
                    session: aiohttp.ClientSession, subjects: Subjects) -> HealthNotifier:
    issues = (HealthIssues(session, section)
              if section.github.enabled and section.health.repository else None)
    return HealthNotifier(pool, section, issues, subjects)


def health_consumer_config(subjects: Subjects, section: NotifierSection) -> ConsumerConfig:
    config = service_consumer(section.health.durable,
                              [subjects.all_lab_events("device.health")],
                              ack_wait=section.lease_s + 30)
    # A new deployment starts from now: a lab's old history opens no issues.
    config.deliver_policy = DeliverPolicy.NEW
    return config


async def check(config: Config) -> None:
    await check_all(nats=check_nats(config.nats), database=check_database(
        config.database, "SELECT count(*) FROM notifications "
                         "WHERE state IN ('pending', 'sending')"))
